"""The DPG-Bench question graph: ELLA's `dpg_bench.csv` parsed and validated.

One CSV row per question, columns ``item_id, text, keywords, proposition_id, dependency,
category_broad, category_detailed, tuple, question_natural_language``. ``dependency`` lists the
parent proposition ids (``0`` = the root, i.e. none). Categories are taken from the ``tuple``
column exactly as the reference script does: L2 = text before ``(`` (``"entity - whole"``),
L1 = L2 text before ``-`` (``"entity"``).
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from pixeldit.infra.weights import WeightFile, file_digests, register_weight, verify

ELLA_COMMIT = "3c228f1dc6c4d3cad0a47493816151a419f14db3"
QUESTIONS_GIT_BLOB = "98457fc9901943f51ff9a30367250fc292533bed"
QUESTIONS_WEIGHT = register_weight(WeightFile(
    name="dpg-questions",
    url=f"https://raw.githubusercontent.com/TencentQQGYLab/ELLA/{ELLA_COMMIT}/dpg_bench/dpg_bench.csv",
    filename="dpg/dpg_bench.csv",
    licence="Apache-2.0 (TencentQQGYLab/ELLA)",
    git_blob=QUESTIONS_GIT_BLOB,
    description="DPG-Bench question graph (ELLA dpg_bench/dpg_bench.csv)",
))

COLUMNS = ("item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
           "category_detailed", "tuple", "question_natural_language")


class QuestionCSVError(ValueError):
    """The question CSV is malformed; the message names the row and column."""


@dataclasses.dataclass(frozen=True)
class Question:
    item_id: str
    proposition_id: int
    parents: tuple[int, ...]      # parent proposition ids, the root (0) left out
    category_l1: str              # "entity"
    category_l2: str              # "entity - whole"
    question: str
    row: int                      # 0-based data row in the CSV (the reference script drops row 0)


@dataclasses.dataclass(frozen=True)
class QuestionGraph:
    items: dict[str, tuple[Question, ...]]   # item_id -> its questions in CSV order
    path: Path
    git_blob: str

    @property
    def question_count(self) -> int:
        return sum(len(questions) for questions in self.items.values())

    @property
    def is_official(self) -> bool:
        return self.git_blob == QUESTIONS_GIT_BLOB

    def first_row(self) -> Question:
        first_item = next(iter(self.items.values()))
        return first_item[0]


def default_questions_path() -> Path:
    """The registered CSV, verified by git blob id; a clear error with the fetch command if absent."""
    return verify(QUESTIONS_WEIGHT.name)


def load_questions(path: str | Path | None = None) -> QuestionGraph:
    """Parse and validate a DPG question CSV (default: the registered, fetched one)."""
    path = Path(path) if path is not None else default_questions_path()
    git_blob = file_digests(path)["git_blob"]
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise QuestionCSVError(f"{path}: header lacks column(s) {', '.join(missing)}; expected "
                                   f"{', '.join(COLUMNS)} (ELLA dpg_bench.csv format)")
        rows = [(reader.line_num, row) for row in reader]
    return QuestionGraph(items=_build_items(path, rows), path=path, git_blob=git_blob)


def _build_items(path: Path, rows: list[tuple[int, dict[str, str]]]) -> dict[str, tuple[Question, ...]]:
    items: dict[str, list[Question]] = {}
    previous_item = None
    for index, (line, row) in enumerate(rows):
        where = f"{path}: data row {index} (line {line})"
        question = _parse_row(where, index, row)
        if question.item_id in items and question.item_id != previous_item:
            # ELLA's loader would silently replace the earlier block with this one.
            raise QuestionCSVError(f"{where}, column 'item_id': rows of item {question.item_id!r} are not "
                                   f"contiguous; sort the CSV so each item's rows are together")
        siblings = items.setdefault(question.item_id, [])
        if any(sibling.proposition_id == question.proposition_id for sibling in siblings):
            raise QuestionCSVError(f"{where}, column 'proposition_id': {question.proposition_id} appears twice "
                                   f"in item {question.item_id!r}; proposition ids must be unique per item")
        siblings.append(question)
        previous_item = question.item_id
    if not items:
        raise QuestionCSVError(f"{path}: no data rows")
    for questions in items.values():
        _check_dependencies(path, questions)
    return {item_id: tuple(questions) for item_id, questions in items.items()}


def _parse_row(where: str, index: int, row: dict[str, str]) -> Question:
    def cell(column: str) -> str:
        value = (row.get(column) or "").strip()
        if not value:
            raise QuestionCSVError(f"{where}, column {column!r}: empty; every question row needs it")
        return value

    def integer(column: str, text: str, minimum: int) -> int:
        try:
            value = int(text)
        except ValueError:
            raise QuestionCSVError(f"{where}, column {column!r}: {text!r} is not an integer") from None
        if value < minimum:
            raise QuestionCSVError(f"{where}, column {column!r}: {value} is below {minimum}")
        return value

    proposition_id = integer("proposition_id", cell("proposition_id"), 1)
    parents = tuple(integer("dependency", part.strip(), 0) for part in cell("dependency").split(","))
    tuple_text = cell("tuple")
    category_l2 = tuple_text.split("(")[0].strip()
    if "(" not in tuple_text or not category_l2:
        raise QuestionCSVError(f"{where}, column 'tuple': {tuple_text!r} does not start with a category "
                               f"before '(' (like 'entity - whole (cabbage)')")
    return Question(item_id=cell("item_id"), proposition_id=proposition_id,
                    parents=tuple(parent for parent in parents if parent != 0),
                    category_l1=category_l2.split("-")[0].strip(), category_l2=category_l2,
                    question=cell("question_natural_language"), row=index)


def _check_dependencies(path: Path, questions: list[Question]) -> None:
    """Every parent exists in the same item, and the graph has no cycle."""
    by_id = {question.proposition_id: question for question in questions}
    for question in questions:
        where = f"{path}: data row {question.row}, column 'dependency'"
        for parent in question.parents:
            if parent == question.proposition_id:
                raise QuestionCSVError(f"{where}: proposition {parent} of item {question.item_id!r} depends on itself")
            if parent not in by_id:
                raise QuestionCSVError(f"{where}: parent {parent} is not a proposition of item "
                                       f"{question.item_id!r} (known: {sorted(by_id)})")
    for question in questions:
        ancestors(question, by_id)   # raises on a cycle


def ancestors(question: Question, by_id: dict[int, Question]) -> set[int]:
    """All transitive parents of a question (validated: no cycles)."""
    seen: set[int] = set()
    stack = list(question.parents)
    while stack:
        parent = stack.pop()
        if parent == question.proposition_id:
            raise QuestionCSVError(f"item {question.item_id!r}: proposition {parent} is its own ancestor "
                                   f"(dependency cycle through data row {question.row})")
        if parent not in seen:
            seen.add(parent)
            stack.extend(by_id[parent].parents)
    return seen
