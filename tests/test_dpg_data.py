"""Vendored DPG-Bench prompts and the registered question CSV (git blob verification)."""
import dataclasses
import hashlib

import pytest

from evaluators.dpg.prompts import PROMPT_COUNT, PROMPTS_PATH, PROMPTS_SHA1, load_prompts
from evaluators.dpg.questions import QUESTIONS_GIT_BLOB, QUESTIONS_WEIGHT, load_questions
from pixeldit.infra import weights


def test_vendored_prompts_match_their_sha1_and_count():
    assert hashlib.sha1(PROMPTS_PATH.read_bytes()).hexdigest() == PROMPTS_SHA1
    prompts = load_prompts()
    assert len(prompts) == PROMPT_COUNT
    ids = list(prompts)
    assert ids[:3] == ["0", "1", "2"] and "partiprompts1" in prompts
    assert sum(item.isdigit() for item in ids) == 299 and sum(item.startswith("partiprompts") for item in ids) == 324
    assert all(text.strip() == text and text for text in prompts.values())


def test_licence_notice_is_vendored_beside_the_prompts():
    data = PROMPTS_PATH.parent
    assert "Apache License" in (data / "ELLA-Apache-2.0.LICENSE").read_text()
    notice = (data / "NOTICE.txt").read_text()
    assert PROMPTS_SHA1 in notice and "3c228f1" in notice


def test_registry_entry_pins_the_csv_by_git_blob():
    assert QUESTIONS_WEIGHT is weights.get_entry("dpg-questions")
    assert QUESTIONS_WEIGHT.git_blob == QUESTIONS_GIT_BLOB == "98457fc9901943f51ff9a30367250fc292533bed"
    assert "TencentQQGYLab/ELLA/3c228f1" in QUESTIONS_WEIGHT.url and QUESTIONS_WEIGHT.url.endswith("dpg_bench.csv")


def test_offline_default_questions_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path))
    with pytest.raises(weights.MissingWeightsError, match="pixeldit-bench weights fetch dpg-questions"):
        load_questions()


def test_a_fetched_csv_with_another_blob_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path))
    (tmp_path / "dpg").mkdir()
    (tmp_path / "dpg" / "dpg_bench.csv").write_text("item_id\n0\n")
    with pytest.raises(weights.ChecksumError, match="git_blob"):
        load_questions()


def test_fetch_verifies_the_git_blob_before_the_file_appears(tmp_path, monkeypatch):
    source = tmp_path / "served.csv"
    source.write_bytes(b"item_id,text\n0,a\n")
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path / "weights"))
    wrong = dataclasses.replace(QUESTIONS_WEIGHT, url=source.as_uri())
    monkeypatch.setitem(weights.WEIGHTS, "dpg-questions", wrong)
    with pytest.raises(weights.ChecksumError):
        weights.fetch("dpg-questions")
    assert not weights.path_of("dpg-questions").exists()
    right = dataclasses.replace(wrong, git_blob=weights.git_blob_id(source.read_bytes()))
    monkeypatch.setitem(weights.WEIGHTS, "dpg-questions", right)
    assert weights.fetch("dpg-questions").read_bytes() == source.read_bytes()


def test_git_blob_id_matches_git_for_known_contents():
    assert weights.git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert weights.git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
