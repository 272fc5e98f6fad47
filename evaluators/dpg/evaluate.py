"""Score a folder of DPG-Bench grids: layout check, VQA with an answer cache, both aggregation modes."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from evaluators.dpg.cache import AnswerCache
from evaluators.dpg.layout import TILES_PER_IMAGE, LayoutReport, check_layout, crop_tiles
from evaluators.dpg.prompts import PROMPTS_SHA1
from evaluators.dpg.questions import QuestionGraph, load_questions
from evaluators.dpg.scoring import MODES, ModeScores, image_order, score_answers
from evaluators.dpg.vqa import VQABackend, make_backend
from evaluators.registry import load_task
from pixeldit.infra.files import sha256_file
from pixeldit.infra.results import make_result

EVALUATOR_VERSION = load_task("dpg")["version"]


class CoverageError(RuntimeError):
    """Not every item was scored and --allow-missing was not given."""


def modes_for(mode: str) -> tuple[str, ...]:
    if mode == "both":
        return MODES
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose reference, corrected or both")
    return (mode,)


def layout_for(images_dir: str | Path, graph: QuestionGraph, tile_size: int | None,
               allow_missing: bool) -> LayoutReport:
    """Check the folder before any VQA call; raise CoverageError on problems unless allowed."""
    report = check_layout(images_dir, graph.items, tile_size)
    if not report.ok and not allow_missing:
        raise CoverageError(f"{images_dir} does not hold a complete DPG-Bench set:\n  "
                            + "\n  ".join(report.problems())
                            + "\nFix the images (one 2x2 grid `<item_id>.png` per prompt) or pass --allow-missing.")
    return report


def evaluate_dpg(images_dir: str | Path, *, vqa: str | VQABackend = "transformers", vqa_model: str | None = None,
                 mode: str = "both", questions: str | Path | None = None, tile_size: int | None = None,
                 allow_missing: bool = False, cache_path: str | Path | None = None, device: str = "auto",
                 batch_size: int = 32, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score IMAGES_DIR and return a result record (`make_result`); raises CoverageError when incomplete."""
    modes = modes_for(mode)
    images_dir = Path(images_dir)
    graph = load_questions(questions)
    layout = layout_for(images_dir, graph, tile_size, allow_missing)
    backend = vqa if isinstance(vqa, VQABackend) else make_backend(vqa, vqa_model, device, batch_size)
    cache = AnswerCache(cache_path or images_dir.with_name(f"{images_dir.name}-dpg-answers.jsonl"),
                        backend.fingerprint(), backend.card())

    failures: dict[str, str] = {item: "missing image" for item in layout.missing}
    failures.update({item: f"wrong size: {why}" for item, why in layout.wrong_size.items()})
    failures.update({item: f"unreadable: {why}" for item, why in layout.unreadable.items()})
    answers: dict[str, list[dict[int, bool]]] = {}
    image_hashes: dict[str, str] = {}
    order = image_order(layout.found)
    for done, item_id in enumerate(order):
        path = layout.found[item_id]
        try:
            image_hash = sha256_file(path)
            with Image.open(path) as image:
                image.load()
                tiles = crop_tiles(image, layout.tile_size)
        except (OSError, ValueError) as error:
            failures[item_id] = f"unreadable: {type(error).__name__}: {error}"
        else:
            try:
                answers[item_id] = _answer_tiles(image_hash, tiles, graph.items[item_id], backend, cache)
                image_hashes[item_id] = image_hash
            except _VQAFailure as error:
                failures[item_id] = f"VQA failed: {error}"
        if progress:
            progress(done + 1, len(order))

    expected = len(graph.items)
    coverage = len(answers) / expected
    if coverage < 1 and not allow_missing:
        raise CoverageError(f"only {len(answers)} of {expected} items were scored; failures:\n  "
                            + "\n  ".join(f"{item}: {why}" for item, why in sorted(failures.items())[:20])
                            + "\nAnswers so far are cached in " + str(cache.path)
                            + "; fix the cause and rerun, or pass --allow-missing.")
    scores = {name: score_answers(graph, answers, name) for name in modes}
    return _result_record(images_dir, graph, layout, backend, scores, failures, image_hashes, coverage,
                          allow_missing, mode)


class _VQAFailure(RuntimeError):
    pass


def _answer_tiles(image_hash: str, tiles, questions, backend: VQABackend, cache: AnswerCache):
    """Per-tile answers `[{proposition_id: yes}] * 4` of one grid, asking the VQA only what is not cached."""
    per_tile = []
    for tile_index, tile in enumerate(tiles):
        keys = [(image_hash, tile_index, question.question) for question in questions]
        todo = [key for key in keys if cache.get(key) is None]
        if todo:
            try:
                answered = backend.answer([tile] * len(todo), [key[2] for key in todo])
            except Exception as error:   # any backend error: count and list this item, keep going
                raise _VQAFailure(f"{type(error).__name__}: {error}") from error
            if len(answered.yes) != len(todo):
                raise _VQAFailure(f"backend returned {len(answered.yes)} answers for {len(todo)} questions")
            cache.add(todo, answered)
        per_tile.append({question.proposition_id: cache.get(key)[0] for question, key in zip(questions, keys)})
    return per_tile


def _mode_values(scores: ModeScores) -> dict[str, float | None]:
    values: dict[str, float | None] = {f"dpg_score_{scores.mode}": scores.score}
    values.update({f"{scores.mode}/L1/{name}": value for name, value in scores.l1.items()})
    values.update({f"{scores.mode}/L2/{name}": value for name, value in scores.l2.items()})
    return values


def _result_record(images_dir, graph, layout, backend, scores, failures, image_hashes, coverage,
                   allow_missing, mode) -> dict[str, Any]:
    values: dict[str, float | None] = {"coverage": coverage}
    unavailable = {}
    for mode_scores in scores.values():
        values.update(_mode_values(mode_scores))
        if mode_scores.score is None:
            unavailable[f"dpg_score_{mode_scores.mode}"] = "no image could be scored"
    folder_digest = hashlib.sha256("".join(f"{item}:{digest}\n" for item, digest in sorted(image_hashes.items()))
                                   .encode()).hexdigest()
    protocol = {
        "benchmark": "DPG-Bench",
        "questions": {"git_blob": graph.git_blob, "official": graph.is_official,
                      "items": len(graph.items), "questions": graph.question_count},
        "prompts_sha1": PROMPTS_SHA1,
        "vqa": backend.card(),
        "tile_size": layout.tile_size, "tiles_per_image": TILES_PER_IMAGE, "tile_order": "TL, TR, BL, BR",
        "mode": mode, "score": "mean over images of mean over tiles of dependency-masked yes rate, x 100",
        "coverage": coverage, "allow_missing": allow_missing,
    }
    extra = {
        "complete": coverage == 1,
        "questions_path": str(graph.path),
        "vqa_source": str(getattr(backend, "source", "")) or None,
        "failures": dict(sorted(failures.items())),
        "extra_files": layout.extra,
        "modes": {name: {"score": s.score, "excluded": s.excluded,
                         "l1": {k: {"score": v, "answers": s.l1_counts[k]} for k, v in s.l1.items()},
                         "l2": {k: {"score": v, "answers": s.l2_counts[k]} for k, v in s.l2.items()},
                         "images": {item: {"tiles": s.tile_scores[item], "score": s.image_scores[item]}
                                    for item in s.image_scores}}
                  for name, s in scores.items()},
    }
    samples = {"path": str(images_dir), "count": len(image_hashes), "sha256": folder_digest}
    return make_result("dpg", EVALUATOR_VERSION, values, protocol, backend=backend.name, unavailable=unavailable,
                       samples=samples, extra=extra)
