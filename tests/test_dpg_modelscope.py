"""The modelscope (mPLUG) VQA backend end to end: a random-init mPLUG through modelscope's own pipeline.

Needs the optional modelscope stack (evaluators.dpg.vqa.MODELSCOPE_INSTALL); README.md "DPG-Bench" says
why it lives in its own environment (modelscope's mPLUG and OFA code need transformers < 5).
"""
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evaluators.dpg.questions import load_questions
from evaluators.dpg.vqa import MPLUG_MODEL_ID, ModelscopeMplugVQA, weights_sha256
from pixeldit.infra.results import read_result

pytest.importorskip("modelscope", reason="optional modelscope stack not installed (see MODELSCOPE_INSTALL)")

from helpers import CSV, cli, write_images  # noqa: E402  (same grids and CLI as the BLIP tests)

QUESTIONS = load_questions(CSV)
WORDS = sorted({word for item in QUESTIONS.items.values() for q in item
                for word in re.findall(r"[a-z]+|[^\sa-z]", q.question.lower())})


def tiny_mplug(folder: Path, favoured: str) -> Path:
    """A tiny random mPLUG whose one-word answer is always `favoured` ("yes" or "no")."""
    from evaluators.dpg.mplug_random import TINY, write_random_mplug

    other = "no" if favoured == "yes" else "yes"
    return write_random_mplug(folder, TINY, words=WORDS, answer_bias={favoured: 10.0, other: 8.0, "[SEP]": 12.0})


@pytest.fixture(scope="module")
def mplug_dirs(tmp_path_factory):
    return {favoured: tiny_mplug(tmp_path_factory.mktemp(f"mplug-{favoured}"), favoured) for favoured in ("yes", "no")}


@pytest.mark.parametrize("favoured, score", [("yes", 100.0), ("no", 0.0)])
def test_modelscope_backend_end_to_end_through_the_cli(mplug_dirs, tmp_path, favoured, score):
    images = write_images(tmp_path / "images")
    out, cache = tmp_path / "dpg.json", tmp_path / "answers.jsonl"
    result = CliRunner().invoke(cli(), ["eval", "dpg", str(images), "--questions", str(CSV), "--vqa", "modelscope",
                                        "--vqa-model", str(mplug_dirs[favoured]), "--device", "cpu",
                                        "--out", str(out), "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    record = read_result(out)
    assert record["values"]["coverage"] == 1.0 and record["extra"]["complete"] is True
    assert record["extra"]["vqa_source"] == str(mplug_dirs[favoured])
    vqa = record["protocol"]["vqa"]
    assert vqa["model"] == MPLUG_MODEL_ID and vqa["weights_sha256"] == weights_sha256(mplug_dirs[favoured])
    # Every (tile, question) was answered by the pipeline and recorded with its raw text.
    answers = [json.loads(line) for line in cache.read_text().splitlines()[1:]]
    assert len(answers) == QUESTIONS.question_count * 4
    assert {answer["text"] for answer in answers} == {favoured}
    # Exactly "yes" counts: all-yes scores 100 in both modes (reference excludes the failing first item),
    # all-no scores 0.
    assert record["values"]["dpg_score_corrected"] == score and record["values"]["dpg_score_reference"] == score


def test_modelscope_backend_counts_only_the_exact_text_yes(mplug_dirs):
    from PIL import Image

    backend = ModelscopeMplugVQA(str(mplug_dirs["yes"]), device="cpu")
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    answers = backend.answer([red, red], ["Is there a cat?", "Is the clock round?"])
    assert answers.text == ["yes", "yes"] and answers.yes == [True, True] and answers.p_yes == [None, None]
    backend.pipeline = lambda inputs: {"text": "yes."}           # what a checkpoint might also say
    assert backend.answer([red], ["Is there a cat?"]).yes == [False]


def test_uncached_hub_id_names_the_download_command(monkeypatch, tmp_path):
    from pixeldit.infra.weights import MissingWeightsError

    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingWeightsError, match=f"modelscope download {MPLUG_MODEL_ID} --local-dir"):
        ModelscopeMplugVQA(device="cpu")
