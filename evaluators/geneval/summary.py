"""GenEval aggregation, as `evaluation/summary_scores.py` of the reference computes it.

A prompt is identified by its metadata string and counts as correct when any of its images is;
tasks come in order of first appearance; overall = unweighted mean of the per-task image accuracies.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

RESULT_FIELDS = ("filename", "tag", "prompt", "correct", "reason", "metadata", "details")


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(rows)
    if not rows:
        raise ValueError("no scored images to summarise")
    by_prompt: dict[str, bool] = {}
    by_task: dict[str, list[bool]] = {}
    for row in rows:
        correct = bool(row["correct"])
        by_prompt[row["metadata"]] = by_prompt.get(row["metadata"], False) or correct
        by_task.setdefault(row["tag"], []).append(correct)
    tasks = {tag: sum(flags) / len(flags) for tag, flags in by_task.items()}
    return {"images": len(rows), "prompts": len(by_prompt),
            "correct_images": sum(bool(row["correct"]) for row in rows) / len(rows),
            "correct_prompts": sum(by_prompt.values()) / len(by_prompt),
            "tasks": tasks, "task_counts": {tag: [sum(f), len(f)] for tag, f in by_task.items()},
            "overall": round(sum(tasks.values()) / len(tasks), 5)}


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results.jsonl; a torn last line (a killed run) is dropped, any other bad line is an error."""
    lines = Path(path).read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number} is not JSON; delete that line (its image is rescored)") from None
        missing = [field for field in RESULT_FIELDS if field not in row]
        if missing:
            raise ValueError(f"{path}:{number} lacks {missing}; is this a GenEval results.jsonl?")
        rows.append(row)
    return rows


def format_summary(summary: Mapping[str, Any]) -> str:
    """The reference's printout."""
    lines = ["Summary", "=======", f"Total images: {summary['images']}", f"Total prompts: {summary['prompts']}",
             f"% correct images: {summary['correct_images']:.2%}",
             f"% correct prompts: {summary['correct_prompts']:.2%}", "", "Task breakdown", "=============="]
    for tag, accuracy in summary["tasks"].items():
        hits, total = summary["task_counts"][tag]
        lines.append(f"{tag:<16} = {accuracy:.2%} ({hits} / {total})")
    lines += ["", f"Overall score (avg. over tasks): {summary['overall']:.5f}"]
    return "\n".join(lines)
