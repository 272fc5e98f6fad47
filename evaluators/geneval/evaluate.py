"""Score a GenEval image folder: detect, apply the rules, write results.jsonl and a result JSON.

Resumable: each scored image is appended to `results.jsonl` at once, and a rerun skips the images
already there; detections are cached per image content (sha256) and detector, so rescoring with
other rules or a new colour classifier does not rerun the detector.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image, ImageOps

from evaluators.geneval import prompts
from evaluators.geneval.colour import ClipColourClassifier
from evaluators.geneval.detectors import Detector
from evaluators.geneval.rules import ImageDetections, Thresholds, evaluate, select_detections
from evaluators.geneval.summary import read_results, summarize
from evaluators.registry import load_task
from pixeldit.infra.files import write_json_atomic
from pixeldit.infra.results import make_result

VERSION = load_task("geneval")["version"]
REFERENCE = "djghosh13/geneval@af4902f evaluation/evaluate_images.py + summary_scores.py"


class ProtocolMismatchError(ValueError):
    """An output folder holds results scored under another protocol."""


def protocol_card(detector: Detector, colours: ClipColourClassifier, thresholds: Thresholds,
                  samples: list[prompts.Sample]) -> dict[str, Any]:
    per_prompt = Counter(sample.path.parent.parent.name for sample in samples)
    counts = sorted(set(per_prompt.values()))
    return {"reference": REFERENCE,
            "prompt_set": prompts.METADATA_FILE, "prompt_set_sha1": prompts.SHA1[prompts.METADATA_FILE],
            "object_names_sha1": prompts.SHA1[prompts.OBJECT_NAMES_FILE],
            "prompts_scored": len(per_prompt), "images": len(samples),
            "images_per_prompt": counts[0] if len(counts) == 1 else counts,
            "detector": detector.card, "clip": colours.protocol(),
            "thresholds": {"score": thresholds.score, "counting_score": thresholds.counting_score,
                           "max_objects": thresholds.max_objects, "position_margin": thresholds.position_margin,
                           "max_overlap": 1.0}}


class DetectionCache:
    """Detections per image sha256 under `root/<detector key>/`, only those any threshold could keep."""

    def __init__(self, root: Path, detector: Detector, floor: float):
        self.detector = detector
        self.floor = floor
        self.folder = Path(root) / f"{detector.cache_key()}-above{floor:g}"

    def detect(self, image: Image.Image, image_sha256: str) -> ImageDetections:
        path = self.folder / f"{image_sha256}.npz"
        if path.is_file():
            with np.load(path) as stored:
                masks = np.unpackbits(stored["masks"], axis=-1, count=int(stored["width"])).astype(bool)
                return ImageDetections(stored["boxes"], stored["scores"], stored["labels"], masks)
        found = self.detector.detect(image)
        keep = found.scores > self.floor
        kept = ImageDetections(found.boxes[keep], found.scores[keep], found.labels[keep], found.masks[keep])
        self.folder.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp.npz")
        np.savez_compressed(temp, boxes=kept.boxes, scores=kept.scores, labels=kept.labels,
                            masks=np.packbits(kept.masks, axis=-1), width=image.width)
        temp.replace(path)
        return kept


def score_image(image: Image.Image, found: ImageDetections, metadata: dict[str, Any], classnames: list[str],
                colours: ClipColourClassifier, thresholds: Thresholds) -> tuple[bool, str, dict[str, list]]:
    """Verdict, reason and the kept boxes ([x1, y1, x2, y2, score] per class, like the reference's details)."""
    kept = select_detections(found, classnames, metadata["tag"], thresholds)
    correct, reason = evaluate(kept, metadata, functools.partial(colours.classify, image), thresholds.position_margin)
    details = {name: [[*map(float, d.box), d.score] for d in objs] for name, objs in kept.items()}
    return correct, reason, details


def score_folder(images_dir: str | Path, out_dir: str | Path, detector: Detector, colours: ClipColourClassifier,
                 thresholds: Thresholds = Thresholds(),
                 progress: Callable[[Iterable], Iterable] = lambda items: items) -> dict[str, Any]:
    """Score every image under `images_dir` into `out_dir` (results.jsonl, geneval.json); returns the result."""
    prompts.verify_data()
    classnames = prompts.load_object_names()
    samples = list(prompts.iter_samples(images_dir))
    if not samples:
        raise FileNotFoundError(f"no <digits>.png images under {images_dir}/*/samples/; see "
                                f"`pixeldit-bench eval geneval prompts --help` for the layout")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    protocol = protocol_card(detector, colours, thresholds, samples)
    _claim_output(out_dir / "protocol.json", protocol)

    results_path = out_dir / "results.jsonl"
    rows = read_results(results_path) if results_path.exists() else []
    _rewrite_jsonl(results_path, rows)          # drops a torn last line left by a killed run
    done = {row["filename"] for row in rows}
    cache = DetectionCache(out_dir / "detections", detector, min(thresholds.score, thresholds.counting_score))
    with open(results_path, "a") as results:
        for sample in progress([s for s in samples if s.name not in done]):
            data = sample.path.read_bytes()
            with Image.open(io.BytesIO(data)) as stored:
                image = ImageOps.exif_transpose(stored).convert("RGB")
            found = cache.detect(image, hashlib.sha256(data).hexdigest())
            correct, reason, details = score_image(image, found, sample.metadata, classnames, colours, thresholds)
            row = {"filename": sample.name, "tag": sample.metadata["tag"], "prompt": sample.metadata["prompt"],
                   "correct": correct, "reason": reason, "metadata": json.dumps(sample.metadata),
                   "details": json.dumps(details)}
            results.write(json.dumps(row) + "\n")
            results.flush()
            rows.append(row)
    return write_result(rows, protocol, out_dir / "geneval.json", images_dir)


def write_result(rows: list[dict[str, Any]], protocol: dict[str, Any], path: Path, images_dir: str | Path) -> dict:
    summary = summarize(rows)
    values: dict[str, float | None] = {"overall": summary["overall"], "correct_images": summary["correct_images"],
                                       "correct_prompts": summary["correct_prompts"]}
    unavailable = {}
    for task in prompts.TASKS:
        values[task] = summary["tasks"].get(task)
        if values[task] is None:
            unavailable[task] = "no image of this task was scored (subset of the prompts)"
    record = make_result("geneval", VERSION, values, protocol, backend=protocol["detector"]["backend"],
                         unavailable=unavailable,
                         samples={"path": str(images_dir), "count": summary["images"], "prompts": summary["prompts"]},
                         extra={"task_counts": summary["task_counts"]})
    write_json_atomic(path, record)
    return record


def _claim_output(path: Path, protocol: dict[str, Any]) -> None:
    """Remember the protocol of an output folder; refuse to mix results of two protocols in it."""
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != json.loads(json.dumps(protocol)):
            changed = sorted(k for k in set(previous) | set(protocol) if previous.get(k) != protocol.get(k))
            raise ProtocolMismatchError(
                f"{path.parent} holds results scored with another protocol (differs in: {', '.join(changed)}); "
                f"pass another --out, or delete {path.parent} to rescore")
    else:
        write_json_atomic(path, protocol)


def _rewrite_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.exists():
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
