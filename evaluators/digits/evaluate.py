"""Prompt-following accuracy of text-to-image digits, scored by a classifier of real digits.

Protocol: images (generated or real, uint8 NHWC) are turned grey (channel mean), area-downsampled to 8x8
(PIL BOX) and scaled to scikit-learn's digit range 0..16, so the classifier sees what the digits originally
were. A multinomial logistic regression (scikit-learn, lbfgs, C = 1, max_iter 5000, inputs standardised)
is fitted on the dataset's `train` split; its accuracy on the held-out `reference` split is the ceiling a
generator can be measured against; the score is its accuracy on the generated images against the class
each one's prompt asked for (`arr_1` of a samples.npz written by `pixeldit-bench t2i generate`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from evaluators.registry import load_task, register_evaluator
from pixeldit.infra.datasets import open_dataset
from pixeldit.infra.files import sha256_file
from pixeldit.infra.results import make_result

EVALUATOR = load_task("digits")["result_name"]   # the name its result JSONs carry
VERSION = load_task("digits")["version"]


def to_8x8(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 64) float64 grey values 0..16 at 8x8 (area average)."""
    from PIL import Image

    grey = images.astype(np.float64).mean(axis=-1)                                        # (N, H, W)
    small = np.stack([np.asarray(Image.fromarray(g.astype(np.float32), mode="F").resize((8, 8), Image.Resampling.BOX))
                      for g in grey])                                                      # (N, 8, 8)
    return (small * 16.0 / 255.0).reshape(len(images), 64)


def fit_classifier(images: np.ndarray, labels: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(to_8x8(images), labels)


def _open_inputs(samples: Path, dataset: str | os.PathLike):
    """(images, wanted classes, train split, reference split), refusing samples without the class each prompt
    asked for."""
    with np.load(samples) as data:
        if "arr_1" not in data:
            raise ValueError(f"{samples} has no arr_1 (the class each prompt asked for); generate it with "
                             f"`pixeldit-bench t2i generate ... --prompts digits`")
        images, wanted = data["arr_0"], data["arr_1"]
    return images, wanted, open_dataset(dataset, split="train"), open_dataset(dataset, split="reference")


def plan_prompt_following(samples: str | os.PathLike, dataset: str | os.PathLike) -> dict:
    """Check the inputs without scoring (what `eval digits --dry-run` prints): the samples carry the class each
    prompt asked for, and the dataset has the train and reference splits."""
    _, wanted, train, reference = _open_inputs(Path(samples), dataset)
    return {"samples": str(samples), "count": len(wanted), "train_images": len(train),
            "reference_images": len(reference)}


@register_evaluator("digits")
def evaluate_prompt_following(samples: str | os.PathLike, dataset: str | os.PathLike) -> dict:
    """Result record: accuracy on the samples, the real held-out ceiling, and per-class accuracy."""
    samples = Path(samples)
    images, wanted, train, reference = _open_inputs(samples, dataset)
    classifier = fit_classifier(*train.get_batch(np.arange(len(train))))
    real_images, real_labels = reference.get_batch(np.arange(len(reference)))
    predicted = classifier.predict(to_8x8(images))
    classes = sorted(set(wanted.tolist()))
    values = {"accuracy": float(np.mean(predicted == wanted)),
              "real_heldout_accuracy": float(np.mean(classifier.predict(to_8x8(real_images)) == real_labels)),
              **{f"accuracy_class_{c}": float(np.mean(predicted[wanted == c] == c)) for c in classes}}
    protocol = {"classifier": "StandardScaler + LogisticRegression(C=1, lbfgs, max_iter=5000)",
                "features": "grey channel mean, PIL BOX downsampling to 8x8, scaled to 0..16",
                "train_split": f"{dataset} train ({len(train)})", "ceiling_split": f"{dataset} reference ({len(reference)})",
                "dataset_manifest_sha256": sha256_file(Path(dataset) / "dataset.json")}
    return make_result(EVALUATOR, VERSION, values, protocol,
                       samples={"file": str(samples), "sha256": sha256_file(samples), "count": int(len(images))})
