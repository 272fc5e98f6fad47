"""GenEval scoring rules as pure functions over detections (no detector, no CLIP, no files).

They reproduce `evaluate_image()` / `evaluate()` / `relative_position()` of djghosh13/geneval
`evaluation/evaluate_images.py` (commit af4902f) with its default `--options`:

* keep a class's detections whose score is strictly above 0.3 (0.9 for every class when the
  prompt's tag is ``counting``), best first, at most 16 per class; class-wise NMS is off
  (``max_overlap=1.0``);
* an ``include`` clause takes the top-``count`` detections of its class and fails when there are
  fewer; a ``color`` asks the colour classifier about exactly those and needs ``count`` hits;
  a ``position`` ``[relation, group]`` needs every one of them to stand in ``relation`` to every
  object matched by include clause number ``group`` (position is only checked when the colour held);
* an ``exclude`` clause fails when at least ``count`` detections of its class were kept.

`tests/test_geneval_parity.py` checks verdicts and reasons against the reference's own code.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = ("left of", "right of", "above", "below")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The reference's `--options` defaults; changing any of them changes the protocol."""
    score: float = 0.3
    counting_score: float = 0.9      # used for every object when the tag is "counting"
    max_objects: int = 16            # per class, after the score threshold
    position_margin: float = 0.1     # share of the summed box sizes ignored along each axis

    def score_for(self, tag: str) -> float:
        return self.counting_score if tag == "counting" else self.score


@dataclasses.dataclass(frozen=True, eq=False)
class Detection:
    """One kept object: box (x1, y1, x2, y2) in pixels, score, and a boolean HxW mask (or None)."""
    box: np.ndarray
    score: float
    mask: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDetections:
    """Everything a detector found in one image, flat: labels index the 80 GenEval class names."""
    boxes: np.ndarray    # (N, 4) float, xyxy pixels
    scores: np.ndarray   # (N,)
    labels: np.ndarray   # (N,) int
    masks: np.ndarray    # (N, H, W) bool

    def __post_init__(self):
        count = len(self.scores)
        if self.boxes.shape != (count, 4) or self.labels.shape != (count,) or len(self.masks) != count:
            raise ValueError(f"inconsistent detections: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                             f"labels {self.labels.shape}, masks {self.masks.shape}")


# A colour classifier answers, for the given objects of one class, one colour name per object.
ColourClassifier = Callable[[Sequence[Detection], str], Sequence[str]]


def select_detections(found: ImageDetections, classnames: Sequence[str], tag: str,
                      thresholds: Thresholds = Thresholds()) -> dict[str, list[Detection]]:
    """Per class, the detections above the tag's threshold, best first, capped at `max_objects`.

    Classes with nothing kept are absent. The descending order is `np.argsort(scores)[::-1]`, the
    reference's own expression, so equal scores come out in the same order as there.
    """
    minimum = thresholds.score_for(tag)
    kept: dict[str, list[Detection]] = {}
    for label, classname in enumerate(classnames):
        indices = np.flatnonzero(found.labels == label)
        scores = found.scores[indices]
        order = np.argsort(scores)[::-1]
        order = order[scores[order] > minimum][:thresholds.max_objects]
        if len(order):
            kept[classname] = [Detection(found.boxes[indices[i]], float(scores[i]), found.masks[indices[i]])
                               for i in order]
    return kept


def relative_position(box_a: Sequence[float], box_b: Sequence[float], margin: float = 0.1) -> set[str]:
    """Relations of box A to box B, ignoring `margin` x (size A + size B) of the centre offset per axis.

    The shrunken offset is divided by the length of the original offset, and a relation holds when
    its component passes 0.5 (y grows downwards, so "above" is negative).
    """
    corners = np.array([box_a[:4], box_b[:4]]).reshape(2, 2, 2)   # [object, corner, xy]
    centre_a, centre_b = corners.mean(axis=1)
    size_a, size_b = np.abs(corners[:, 1] - corners[:, 0])
    offset = centre_a - centre_b
    shrunk = np.maximum(np.abs(offset) - margin * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(shrunk) < 1e-3):
        return set()
    dx, dy = shrunk / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def evaluate(detections: Mapping[str, Sequence[Detection]], metadata: Mapping[str, Any],
             classify_colours: ColourClassifier, margin: float = 0.1) -> tuple[bool, str]:
    """Verdict and reason (one line per failed clause, as the reference words them) for one image.

    Where the reference joins a set of relations in hash order, they are joined in `RELATIONS`
    order here, so reasons are reproducible; verdicts are unaffected.
    """
    correct = True
    reasons: list[str] = []
    matched_groups: list[Sequence[Detection] | None] = []   # per include clause, its objects if it held
    for clause in metadata.get("include", []):
        classname, count = clause["class"], clause["count"]
        found = list(detections.get(classname, []))[:count]
        failure = None
        if len(found) < count:
            failure = f"expected {classname}>={count}, found {len(found)}"
        if failure is None and "color" in clause:
            failure = _colour_failure(found, classname, count, clause["color"], classify_colours)
        if failure is None and "position" in clause:
            failure = _position_failure(found, classname, *clause["position"], matched_groups, margin)
        if failure is not None:
            correct = False
            reasons.append(failure)
        matched_groups.append(found if failure is None else None)
    for clause in metadata.get("exclude", []):
        present = len(detections.get(clause["class"], []))
        if present >= clause["count"]:
            correct = False
            reasons.append(f"expected {clause['class']}<{clause['count']}, found {present}")
    return correct, "\n".join(reasons)


def _colour_failure(found, classname, count, colour, classify_colours) -> str | None:
    predicted = list(classify_colours(found, classname))
    hits = predicted.count(colour)
    if hits >= count:
        return None
    tally = ", ".join(f"{predicted.count(c)} {c}" for c in COLORS if c in predicted)
    return f"expected {colour} {classname}>={count}, found {hits} {colour}; and {tally}"


def _position_failure(found, classname, relation, group, matched_groups, margin) -> str | None:
    targets = matched_groups[group]
    if targets is None:
        return f"no target for {classname} to be {relation}"
    for obj in found:
        for target in targets:
            actual = relative_position(obj.box, target.box, margin)
            if relation not in actual:
                actual_words = " and ".join(r for r in RELATIONS if r in actual)
                return f"expected {classname} {relation} target, found {actual_words} target"
    return None
