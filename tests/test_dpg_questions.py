"""Parsing and validating the DPG question CSV (ELLA format)."""
from pathlib import Path

import pytest
from helpers import write_csv

from evaluators.dpg.questions import QuestionCSVError, load_questions

FIXTURE = Path(__file__).parent / "fixtures" / "dpg" / "questions_small.csv"


def test_fixture_parses_into_a_question_graph():
    graph = load_questions(FIXTURE)
    assert list(graph.items) == ["0", "3", "COCOval2014000000000042", "partiprompts7", "midjourney12"]
    assert graph.question_count == 30 and not graph.is_official
    truck_on_beach = graph.items["3"][3]
    assert truck_on_beach.parents == (2, 1)            # order kept, spaces allowed
    assert truck_on_beach.category_l2 == "relation - spatial" and truck_on_beach.category_l1 == "relation"
    assert graph.items["3"][4].category_l2 == "global -" and graph.items["3"][4].category_l1 == "global"
    assert graph.first_row().question == "Are there cabbages?" and graph.first_row().row == 0


@pytest.mark.parametrize("rows, match", [
    ([("a", "x", "0", "entity - whole (a)", "Q?")], r"data row 0 \(line 2\), column 'proposition_id': 'x' is not an integer"),
    ([("a", "1", "0", "entity - whole (a)", "Q?"), ("a", "2", "1;3", "entity - whole (b)", "Q?")],
     r"data row 1 \(line 3\), column 'dependency': '1;3'"),
    ([("a", "1", "0", "entity whole", "Q?")], r"column 'tuple'"),
    ([("a", "1", "0", "entity - whole (a)", "")], r"column 'question_natural_language': empty"),
    ([("a", "1", "0", "entity - whole (a)", "Q?"), ("a", "1", "0", "entity - whole (b)", "Q?")],
     r"data row 1 .*'proposition_id': 1 appears twice"),
    ([("a", "1", "0", "entity - whole (a)", "Q?"), ("b", "1", "0", "entity - whole (b)", "Q?"),
      ("a", "2", "1", "entity - whole (c)", "Q?")], r"data row 2 .*not contiguous"),
    ([("a", "1", "0", "entity - whole (a)", "Q?"), ("a", "2", "5", "entity - whole (b)", "Q?")],
     r"data row 1, column 'dependency': parent 5 is not a proposition"),
    ([("a", "1", "2", "entity - whole (a)", "Q?"), ("a", "2", "1", "entity - whole (b)", "Q?")], r"cycle"),
    ([("a", "1", "1", "entity - whole (a)", "Q?")], r"depends on itself"),
])
def test_malformed_rows_name_row_and_column(tmp_path, rows, match):
    with pytest.raises(QuestionCSVError, match=match):
        load_questions(write_csv(tmp_path / "q.csv", rows))


def test_missing_columns_are_listed(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("item_id,proposition_id\n0,1\n")
    with pytest.raises(QuestionCSVError, match="lacks column.*dependency.*question_natural_language"):
        load_questions(path)
