"""GenEval (Ghosh et al., 2023): detector + CLIP colour scoring of text-to-image samples with the
reference's exact rules. `evaluate_geneval` is registered as evaluator "geneval"."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from evaluators.geneval import weights as _weights  # noqa: F401  (registers GenEval's external files)
from evaluators.geneval.colour import ClipColourClassifier
from evaluators.geneval.detectors import backend_weights, build_detector
from evaluators.geneval.evaluate import score_folder
from evaluators.geneval.weights import CLIP_WEIGHTS
from evaluators.registry import register_evaluator
from pixeldit.infra.weights import MissingWeightsError, path_of


def require_weights(detector: str) -> None:
    """Fail before loading anything when a file the run needs is missing, naming every fetch at once."""
    missing = [name for name in (CLIP_WEIGHTS.name, *backend_weights(detector)) if not path_of(name).is_file()]
    if missing:
        raise MissingWeightsError(
            f"GenEval ({detector} detector) needs weights that are not installed: "
            f"{', '.join(str(path_of(name)) for name in missing)}.\nOn a connected machine run "
            f"`pixeldit-bench weights fetch {' '.join(missing)}` (or set PIXELDIT_WEIGHTS to a folder holding them).")


@register_evaluator("geneval")
def evaluate_geneval(images_dir: str | Path, out_dir: str | Path, detector: str = "mmdet", device: str = "cpu",
                     progress: Callable[[Iterable], Iterable] = lambda items: items) -> dict[str, Any]:
    """Score a GenEval image folder with the registered detector and CLIP weights; returns the result record."""
    require_weights(detector)
    found = build_detector(detector, device)
    return score_folder(images_dir, out_dir, found, ClipColourClassifier.from_registry(device), progress=progress)
