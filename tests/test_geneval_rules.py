"""GenEval rules on hand-built detections, and parity with the reference's own `evaluate_image()`."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from evaluators.geneval.prompts import load_object_names
from evaluators.geneval.rules import (
    Detection,
    ImageDetections,
    Thresholds,
    evaluate,
    relative_position,
    select_detections,
)

FIXTURES = Path(__file__).parent / "fixtures" / "geneval"
NAMES = load_object_names()


def det(x1, y1, x2, y2, score=0.95, colour=None):
    found = Detection(np.array([x1, y1, x2, y2], float), score)
    if colour is not None:
        COLOURS_OF[id(found)] = colour
    return found


COLOURS_OF: dict[int, str] = {}


def stub_colours(objects, classname):
    return [COLOURS_OF[id(obj)] for obj in objects]


def no_colours(objects, classname):
    raise AssertionError("the colour classifier must not be asked here")


def flat(*entries):
    """ImageDetections from (classname, box, score) triples, with empty 4x4 masks."""
    return ImageDetections(boxes=np.array([e[1] for e in entries], float).reshape(-1, 4),
                           scores=np.array([e[2] for e in entries], float),
                           labels=np.array([NAMES.index(e[0]) for e in entries], int),
                           masks=np.zeros((len(entries), 4, 4), bool))


# ------------------------------------------------------------------ detection selection

def test_threshold_is_strict_and_counting_uses_0_9_for_every_class():
    found = flat(("dog", [0, 0, 1, 1], 0.3), ("dog", [0, 0, 2, 2], 0.31), ("cat", [0, 0, 3, 3], 0.9),
                 ("cat", [0, 0, 4, 4], 0.91))
    normal = select_detections(found, NAMES, "two_object")
    assert [d.score for d in normal["dog"]] == [0.31]
    assert [d.score for d in normal["cat"]] == [0.91, 0.9]
    counting = select_detections(found, NAMES, "counting")
    assert "dog" not in counting and [d.score for d in counting["cat"]] == [0.91]


def test_at_most_16_per_class_best_first():
    scores = np.linspace(0.4, 0.99, 20)
    found = flat(*[("cup", [0, 0, 1, 1], s) for s in scores])
    kept = select_detections(found, NAMES, "single_object")["cup"]
    assert len(kept) == Thresholds().max_objects
    assert [d.score for d in kept] == sorted(scores, reverse=True)[:16]


# ------------------------------------------------------------------ position

def box_pair(offset_x, offset_y, size=100.0):
    target = [0.0, 0.0, size, size]
    return [offset_x, offset_y, offset_x + size, offset_y + size], target


@pytest.mark.parametrize("relation, sign, axis", [("left of", -1, 0), ("right of", 1, 0), ("above", -1, 1), ("below", 1, 1)])
def test_position_needs_more_than_the_margin(relation, sign, axis):
    # Two 100 px boxes: the margin takes 0.1 * (100 + 100) = 20 px off the centre offset. With a
    # purely horizontal/vertical offset d the shrunk component is (d - 20) / d, > 0.5 once d > 40.
    for distance, holds in ((20.0, False), (39.0, False), (41.0, True), (300.0, True)):
        offset = [0.0, 0.0]
        offset[axis] = sign * distance
        a, b = box_pair(*offset)
        assert (relation in relative_position(a, b)) is holds, (relation, distance)


def test_position_diagonal_holds_both_relations_and_overlap_holds_none():
    a, b = box_pair(200, 200)
    assert relative_position(a, b) == {"right of", "below"}
    assert relative_position(b, b) == set()


# ------------------------------------------------------------------ evaluate()

def test_missing_object_fails_with_count():
    ok, reason = evaluate({}, {"tag": "single_object", "include": [{"class": "dog", "count": 1}]}, no_colours)
    assert not ok and reason == "expected dog>=1, found 0"


def test_counting_with_exclude():
    metadata = {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}]}
    two = {"clock": [det(0, 0, 1, 1), det(5, 5, 9, 9)]}
    assert evaluate(two, metadata, no_colours) == (True, "")
    three = {"clock": two["clock"] + [det(20, 20, 30, 30)]}
    assert evaluate(three, metadata, no_colours) == (False, "expected clock<3, found 3")
    one = {"clock": two["clock"][:1]}
    assert evaluate(one, metadata, no_colours) == (False, "expected clock>=2, found 1")


def test_colour_with_two_objects_uses_only_the_top_count():
    metadata = {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "red"},
                                                  {"class": "bench", "count": 1, "color": "blue"}]}
    good = {"car": [det(0, 0, 5, 5, 0.9, "red"), det(0, 0, 6, 6, 0.8, "green")], "bench": [det(9, 9, 20, 20, 0.7, "blue")]}
    assert evaluate(good, metadata, stub_colours) == (True, "")
    wrong_bench = {"car": good["car"], "bench": [det(9, 9, 20, 20, 0.7, "white")]}
    assert evaluate(wrong_bench, metadata, stub_colours) == (
        False, "expected blue bench>=1, found 0 blue; and 1 white")


def test_position_against_every_target_and_skipped_after_a_colour_failure():
    metadata = {"tag": "position", "include": [{"class": "teddy bear", "count": 1},
                                                {"class": "dog", "count": 1, "position": ["right of", 0]}]}
    bear = det(0, 0, 100, 100)
    assert evaluate({"teddy bear": [bear], "dog": [det(300, 0, 400, 100)]}, metadata, no_colours) == (True, "")
    left = evaluate({"teddy bear": [bear], "dog": [det(-300, 0, -200, 100)]}, metadata, no_colours)
    assert left == (False, "expected dog right of target, found left of target")
    no_target = evaluate({"dog": [det(300, 0, 400, 100)]}, metadata, no_colours)
    assert no_target == (False, "expected teddy bear>=1, found 0\nno target for dog to be right of")
    coloured = {"tag": "position", "include": [metadata["include"][0],
                                                {"class": "dog", "count": 1, "color": "red", "position": ["right of", 0]}]}
    green_dog_left = {"teddy bear": [bear], "dog": [det(-300, 0, -200, 100, colour="green")]}
    assert evaluate(green_dog_left, coloured, stub_colours) == (False, "expected red dog>=1, found 0 red; and 1 green")


# ------------------------------------------------------------------ parity with the reference

def _relations_sorted(reason: str) -> str:
    """The reference joins a *set* of relations in hash order; compare them as sets."""
    return re.sub(r"found (.*?) target", lambda m: "found " + " and ".join(sorted(m.group(1).split(" and "))) + " target",
                  reason)


def test_parity_with_reference_evaluate_image():
    with gzip.open(FIXTURES / "reference_rules.json.gz", "rt") as handle:
        cases = json.load(handle)["cases"]
    assert len(cases) == 1106
    mismatches = []
    for number, case in enumerate(cases):
        detections = case["detections"]
        found = ImageDetections(boxes=np.array([d["box"] for d in detections], float).reshape(-1, 4),
                                scores=np.array([d["score"] for d in detections], float),
                                labels=np.array([d["label"] for d in detections], int),
                                masks=np.zeros((len(detections), 1, 1), bool))
        colour_of = {(*d["box"], d["score"]): d["colour"] for d in detections}
        kept = select_detections(found, NAMES, case["metadata"]["tag"])
        correct, reason = evaluate(kept, case["metadata"],
                                   lambda objs, _: [colour_of[(*obj.box.tolist(), obj.score)] for obj in objs])
        details = {name: [[*obj.box.tolist(), obj.score] for obj in objs] for name, objs in kept.items()}
        expected = case["expected"]
        if (correct, _relations_sorted(reason), details) != (expected["correct"], _relations_sorted(expected["reason"]),
                                                             expected["details"]):
            mismatches.append(number)
    assert not mismatches, f"{len(mismatches)} of {len(cases)} cases disagree with the reference, e.g. {mismatches[:5]}"
    assert sum(case["expected"]["correct"] for case in cases) == 439     # the fixture exercises both verdicts
