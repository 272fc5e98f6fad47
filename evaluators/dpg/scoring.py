"""DPG-Bench aggregation of yes/no answers into the score and the L1/L2 category tables.

Two modes (see README.md in this folder):

* ``reference`` reproduces ELLA's ``dpg_bench/compute_dpg_bench.py`` (commit 3c228f1) number for
  number: the first CSV data row is dropped (its item then fails with a KeyError when another of
  its questions depends on it, and is left out of the mean); parents are zeroed in place in CSV
  order; category scores pool the *last tile's raw* answers, without dependency masking.
* ``corrected`` keeps every row, masks a question when it or any ancestor is not answered yes,
  pools category scores over all tiles with the same masking, and excludes no item.

Both: tile score = mean over the item's questions, image score = mean over tiles,
score = mean over images x 100. Images are taken in file-name order (`<item_id>.png`).
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np

from evaluators.dpg.questions import Question, QuestionGraph, ancestors

MODES = ("reference", "corrected")

TileAnswers = Mapping[int, bool]          # proposition id -> answered yes


@dataclasses.dataclass
class ModeScores:
    mode: str
    score: float | None                          # mean image score x 100; None when no image scored
    tile_scores: dict[str, list[float]]          # item -> per-tile scores in [0, 1]
    image_scores: dict[str, float]               # item -> mean of its tiles
    excluded: dict[str, str]                     # item -> why this mode left it out
    l1: dict[str, float]                         # category -> score x 100
    l2: dict[str, float]
    l1_counts: dict[str, int]                    # answers pooled into each category
    l2_counts: dict[str, int]


class MissingParentError(KeyError):
    """A question's parent is absent (the reference script's KeyError after it drops row 0)."""


def image_order(item_ids) -> list[str]:
    """Sort items as their `<item_id>.png` file names sort."""
    return sorted(item_ids, key=lambda item_id: f"{item_id}.png")


def score_answers(graph: QuestionGraph, answers: Mapping[str, Sequence[TileAnswers]], mode: str) -> ModeScores:
    """Aggregate per-tile answers of the scored items; `answers[item][tile][proposition_id]`."""
    if mode not in MODES:
        raise ValueError(f"unknown DPG mode {mode!r}; choose one of {', '.join(MODES)}")
    unknown = sorted(set(answers) - set(graph.items))
    if unknown:
        raise KeyError(f"answers for item(s) not in the question CSV: {', '.join(unknown[:5])}")
    score_item = _reference_item if mode == "reference" else _corrected_item
    dropped_row = graph.first_row() if mode == "reference" else None
    tile_scores: dict[str, list[float]] = {}
    excluded: dict[str, str] = {}
    category_values: dict[str, list[float]] = defaultdict(list)
    for item_id in image_order(answers):
        questions = [question for question in graph.items[item_id] if question is not dropped_row]
        if not questions:
            excluded[item_id] = "no question left after dropping the first CSV data row"
            continue
        try:
            tile_scores[item_id], category_answers = score_item(questions, answers[item_id])
        except MissingParentError as error:
            excluded[item_id] = f"KeyError {error.args[0]}: parent dropped with the first CSV data row"
            continue
        for category, value in category_answers:
            category_values[category].append(value)
    # Same arithmetic as the reference: Python sums per tile and image, np.mean over images.
    image_scores = {item_id: sum(scores) / len(scores) for item_id, scores in tile_scores.items()}
    score = float(np.mean(list(image_scores.values())) * 100) if image_scores else None
    l1_values: dict[str, list[float]] = defaultdict(list)
    for category, values in category_values.items():
        l1_values[category.split("-")[0].strip()].extend(values)
    return ModeScores(
        mode=mode, score=score, tile_scores=tile_scores, image_scores=image_scores, excluded=excluded,
        l1={name: float(np.mean(values) * 100) for name, values in sorted(l1_values.items())},
        l2={name: float(np.mean(values) * 100) for name, values in sorted(category_values.items())},
        l1_counts={name: len(values) for name, values in sorted(l1_values.items())},
        l2_counts={name: len(values) for name, values in sorted(category_values.items())})


def _reference_item(questions: list[Question], tiles: Sequence[TileAnswers]):
    """One item as ELLA scores it: in-place zeroing in CSV order; categories from the last tile, raw."""
    tile_scores = []
    raw: dict[int, float] = {}
    for tile in tiles:
        raw = {question.proposition_id: float(tile[question.proposition_id]) for question in questions}
        masked = dict(raw)
        for question in questions:
            for parent in question.parents:
                if parent not in masked:
                    raise MissingParentError(parent)
                if masked[parent] == 0:
                    masked[question.proposition_id] = 0.0
                    break
        tile_scores.append(sum(masked.values()) / len(masked))
    return tile_scores, [(question.category_l2, raw[question.proposition_id]) for question in questions]


def _corrected_item(questions: list[Question], tiles: Sequence[TileAnswers]):
    """A question scores 1 only when it and all its ancestors are answered yes, on every tile."""
    by_id = {question.proposition_id: question for question in questions}
    lineage = {question.proposition_id: ancestors(question, by_id) | {question.proposition_id}
               for question in questions}
    tile_scores, category_answers = [], []
    for tile in tiles:
        masked = [float(all(tile[ancestor] for ancestor in lineage[question.proposition_id]))
                  for question in questions]
        tile_scores.append(sum(masked) / len(masked))
        category_answers.extend((question.category_l2, value) for question, value in zip(questions, masked))
    return tile_scores, category_answers
