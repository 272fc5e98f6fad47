"""DPG aggregation: dependency zeroing, the reference script's quirks, categories, parity fixture."""
import json
from pathlib import Path

import pytest
from helpers import write_csv

from evaluators.dpg.questions import load_questions
from evaluators.dpg.scoring import score_answers

FIXTURES = Path(__file__).parent / "fixtures" / "dpg"


@pytest.fixture
def chain_graph(tmp_path):
    # item "a": 1 <- 2 <- 3 (a chain) and 4 independent; item "b" first row is a root nobody needs.
    return load_questions(write_csv(tmp_path / "q.csv", [
        ("b", "1", "0", "entity - whole (x)", "Is there x?"),
        ("b", "2", "0", "attribute - color (y)", "Is y red?"),
        ("a", "1", "0", "entity - whole (cat)", "Is there a cat?"),
        ("a", "2", "1", "attribute - color (cat, black)", "Is the cat black?"),
        ("a", "3", "2", "relation - spatial (cat, mat, on)", "Is the black cat on the mat?"),
        ("a", "4", "0", "global - (night)", "Is it night?"),
    ]))


def same_on_all_tiles(tile):
    return [dict(tile)] * 4


def test_a_failed_parent_zeroes_its_descendants(chain_graph):
    answers = {"a": same_on_all_tiles({1: False, 2: True, 3: True, 4: True}),
               "b": same_on_all_tiles({1: True, 2: True})}
    for mode in ("reference", "corrected"):
        scores = score_answers(chain_graph, answers, mode)
        assert scores.tile_scores["a"] == [0.25] * 4        # only "night" survives
    assert score_answers(chain_graph, answers, "corrected").image_scores == {"a": 0.25, "b": 1.0}
    assert score_answers(chain_graph, answers, "corrected").score == pytest.approx(62.5)


def test_image_score_is_the_mean_of_its_tiles(chain_graph):
    tiles = [{1: True, 2: True, 3: True, 4: True}, {1: True, 2: False, 3: True, 4: True},
             {1: False, 2: True, 3: True, 4: False}, {1: True, 2: True, 3: False, 4: True}]
    scores = score_answers(chain_graph, {"a": tiles}, "corrected")
    assert scores.tile_scores["a"] == [1.0, 0.5, 0.0, 0.75]
    assert scores.image_scores["a"] == pytest.approx(0.5625) and scores.score == pytest.approx(56.25)


def test_reference_mode_drops_the_first_csv_row_corrected_keeps_it(chain_graph):
    answers = {"b": same_on_all_tiles({1: False, 2: True})}
    assert score_answers(chain_graph, answers, "reference").image_scores == {"b": 1.0}   # row 0 never asked
    assert score_answers(chain_graph, answers, "corrected").image_scores == {"b": 0.5}


def test_reference_mode_excludes_the_first_item_when_a_question_needs_the_dropped_row(tmp_path):
    graph = load_questions(write_csv(tmp_path / "q.csv", [
        ("a", "1", "0", "entity - whole (cat)", "Is there a cat?"),
        ("a", "2", "1", "attribute - color (cat, black)", "Is the cat black?"),
        ("z", "1", "0", "entity - whole (dog)", "Is there a dog?"),
    ]))
    answers = {"a": same_on_all_tiles({1: True, 2: True}), "z": same_on_all_tiles({1: False})}
    reference = score_answers(graph, answers, "reference")
    assert "a" in reference.excluded and "KeyError 1" in reference.excluded["a"]
    assert reference.score == 0.0 and set(reference.image_scores) == {"z"}
    corrected = score_answers(graph, answers, "corrected")
    assert corrected.excluded == {} and corrected.score == 50.0


def test_reference_categories_use_the_last_tile_raw_corrected_pool_masked_tiles(chain_graph):
    tiles = [{1: False, 2: False, 3: False, 4: False}] * 3 + [{1: False, 2: True, 3: True, 4: True}]
    answers = {"a": tiles, "b": same_on_all_tiles({1: True, 2: True})}
    reference = score_answers(chain_graph, answers, "reference")
    # last tile, unmasked: entity 0/1 (+ b's row 0 dropped), colour 1/1 (+ b 1/1), spatial 1/1, global 1/1
    assert reference.l2 == {"attribute - color": 100.0, "entity - whole": 0.0, "global -": 100.0,
                            "relation - spatial": 100.0}
    assert reference.l2_counts == {"attribute - color": 2, "entity - whole": 1, "global -": 1, "relation - spatial": 1}
    corrected = score_answers(chain_graph, answers, "corrected")
    # every tile, masked: a's colour and spatial are zero on all 4 tiles, b's 8 answers are yes
    assert corrected.l2 == {"attribute - color": 50.0, "entity - whole": 50.0, "global -": 25.0,
                            "relation - spatial": 0.0}
    assert corrected.l1 == {"attribute": 50.0, "entity": 50.0, "global": 25.0, "relation": 0.0}
    assert corrected.l1_counts == {"attribute": 8, "entity": 8, "global": 4, "relation": 4}


def test_reference_zeroes_in_place_in_csv_order(tmp_path):
    # 2 depends on 3, which appears later and depends on 1: ELLA reads 3's raw answer, corrected its lineage.
    graph = load_questions(write_csv(tmp_path / "q.csv", [
        ("first", "1", "0", "entity - whole (q)", "Q?"),
        ("a", "1", "0", "entity - whole (shelf)", "Is there a shelf?"),
        ("a", "2", "3", "attribute - color (vase, blue)", "Is the vase blue?"),
        ("a", "3", "1", "entity - whole (vase)", "Is there a vase?"),
    ]))
    answers = {"a": same_on_all_tiles({1: False, 2: True, 3: True})}
    assert score_answers(graph, answers, "reference").tile_scores["a"] == [1 / 3] * 4
    assert score_answers(graph, answers, "corrected").tile_scores["a"] == [0.0] * 4


def test_unknown_mode_and_unknown_items_are_errors(chain_graph):
    with pytest.raises(ValueError, match="unknown DPG mode"):
        score_answers(chain_graph, {}, "published")
    with pytest.raises(KeyError, match="not in the question CSV"):
        score_answers(chain_graph, {"nope": same_on_all_tiles({1: True})}, "corrected")


def fixture_answers(graph):
    recorded = json.loads((FIXTURES / "answers.json").read_text())["answers"]
    return {item: [{q.proposition_id: tile[q.question] == "yes" for q in graph.items[item]} for tile in tiles]
            for item, tiles in recorded.items()}


def test_reference_mode_matches_the_reference_script_exactly():
    """Numbers from ELLA's compute_dpg_bench.py on the same answers (tests/fixtures/dpg/README.md)."""
    graph = load_questions(FIXTURES / "questions_small.csv")
    expected = json.loads((FIXTURES / "reference_scores.json").read_text())
    scores = score_answers(graph, fixture_answers(graph), "reference")
    assert scores.score == expected["score"]
    assert scores.l1 == expected["l1"] and scores.l2 == expected["l2"]
    assert {item: {"tiles": tiles, "score": scores.image_scores[item]}
            for item, tiles in scores.tile_scores.items()} == expected["images"]
    assert sorted(scores.excluded) == expected["failed"] == ["0"]


def test_corrected_mode_on_the_parity_fixture_keeps_every_item():
    graph = load_questions(FIXTURES / "questions_small.csv")
    scores = score_answers(graph, fixture_answers(graph), "corrected")
    assert scores.excluded == {} and len(scores.image_scores) == 5
    assert sum(scores.l2_counts.values()) == graph.question_count * 4
    assert scores.score == pytest.approx(43.791666666666664, abs=1e-12)
