"""DPG evaluation end to end: VQA backends, answer cache, coverage rules, result JSON and CLI."""
import json
import re

import numpy as np
import pytest
from helpers import CSV, DPG_FIXTURES, RECORDED, TILE, cli, colour, write_images
from typer.testing import CliRunner

from evaluators.dpg.evaluate import CoverageError, evaluate_dpg
from evaluators.dpg.layout import write_grid
from evaluators.dpg.questions import load_questions
from evaluators.dpg.vqa import ModelscopeMplugVQA, TransformersBlipVQA, VQAAnswers, VQABackend
from evaluators.registry import get_evaluator
from pixeldit.infra.results import read_result


class RecordedAnswers(VQABackend):
    """Answers from tests/fixtures/dpg/answers.json, found by the tile's colour; counts its calls."""

    name = "recorded"

    def __init__(self, failing_item=None):
        self.by_colour = {colour(index, tile): (item, tile)
                          for index, item in enumerate(sorted(RECORDED)) for tile in range(4)}
        self.failing_item = failing_item
        self.questions_asked = 0

    def card(self):
        return {"backend": self.name, "model": "answers.json"}

    def answer(self, images, questions):
        texts = []
        for image, question in zip(images, questions):
            item, tile = self.by_colour[image.getpixel((0, 0))]
            if item == self.failing_item:
                raise RuntimeError("CUDA out of memory (simulated)")
            texts.append(RECORDED[item][tile][question])
        self.questions_asked += len(questions)
        return VQAAnswers(yes=[text == "yes" for text in texts], p_yes=[None] * len(texts), text=texts)


def test_full_pipeline_reproduces_the_reference_script(tmp_path):
    images = write_images(tmp_path / "images")
    record = evaluate_dpg(images, vqa=RecordedAnswers(), questions=CSV, cache_path=tmp_path / "cache.jsonl")
    expected = json.loads((DPG_FIXTURES / "reference_scores.json").read_text())
    values = record["values"]
    assert values["dpg_score_reference"] == expected["score"] and values["coverage"] == 1.0
    assert {key.split("/")[-1]: value for key, value in values.items() if key.startswith("reference/L1/")} == expected["l1"]
    assert values["dpg_score_corrected"] == pytest.approx(43.791666666666664, abs=1e-12)
    assert record["evaluator"]["name"] == "dpg" and record["extra"]["complete"] is True
    assert record["protocol"]["tile_size"] == TILE and record["protocol"]["questions"]["git_blob"]
    assert record["extra"]["modes"]["reference"]["excluded"].keys() == {"0"}
    assert get_evaluator("dpg") is evaluate_dpg


def test_answers_are_cached_and_a_rerun_asks_nothing(tmp_path):
    images = write_images(tmp_path / "images")
    first = RecordedAnswers()
    evaluate_dpg(images, vqa=first, questions=CSV, cache_path=tmp_path / "cache.jsonl", mode="corrected")
    assert first.questions_asked == 30 * 4
    with open(tmp_path / "cache.jsonl", "a") as handle:
        handle.write('{"image": "torn')                     # a killed run's half line
    second = RecordedAnswers()
    record = evaluate_dpg(images, vqa=second, questions=CSV, cache_path=tmp_path / "cache.jsonl", mode="corrected")
    assert second.questions_asked == 0 and record["values"]["coverage"] == 1.0


def test_cache_of_another_backend_is_refused(tmp_path):
    images = write_images(tmp_path / "images")
    evaluate_dpg(images, vqa=RecordedAnswers(), questions=CSV, cache_path=tmp_path / "cache.jsonl")
    other = RecordedAnswers()
    other.card = lambda: {"backend": "recorded", "model": "another"}
    with pytest.raises(ValueError, match="another VQA backend"):
        evaluate_dpg(images, vqa=other, questions=CSV, cache_path=tmp_path / "cache.jsonl")


def test_missing_image_stops_before_any_vqa_call(tmp_path):
    images = write_images(tmp_path / "images", items=("0", "3", "midjourney12", "partiprompts7"))
    backend = RecordedAnswers()
    with pytest.raises(CoverageError, match="1 missing: COCOval2014000000000042"):
        evaluate_dpg(images, vqa=backend, questions=CSV, cache_path=tmp_path / "cache.jsonl")
    assert backend.questions_asked == 0


def test_vqa_failure_is_listed_and_fails_the_run_unless_allowed(tmp_path):
    images = write_images(tmp_path / "images")
    with pytest.raises(CoverageError, match="(?s)4 of 5 items.*partiprompts7: VQA failed: RuntimeError"):
        evaluate_dpg(images, vqa=RecordedAnswers("partiprompts7"), questions=CSV, cache_path=tmp_path / "c.jsonl")
    record = evaluate_dpg(images, vqa=RecordedAnswers("partiprompts7"), questions=CSV,
                          cache_path=tmp_path / "c.jsonl", allow_missing=True)
    assert record["values"]["coverage"] == 0.8 and record["protocol"]["allow_missing"] is True
    assert record["extra"]["complete"] is False
    assert record["extra"]["failures"] == {"partiprompts7": "VQA failed: RuntimeError: CUDA out of memory (simulated)"}
    assert "partiprompts7" not in record["extra"]["modes"]["corrected"]["images"]


def test_unreadable_and_wrongly_sized_images_are_counted(tmp_path):
    images = write_images(tmp_path / "images", items=("0", "3", "midjourney12"))
    (images / "partiprompts7.png").write_bytes(b"\x89PNG broken")
    write_grid(images, "COCOval2014000000000042", [np.zeros((4, 4, 3), np.uint8)] * 4)
    record = evaluate_dpg(images, vqa=RecordedAnswers(), questions=CSV, cache_path=tmp_path / "c.jsonl",
                          allow_missing=True)
    failures = record["extra"]["failures"]
    assert failures["partiprompts7"].startswith("unreadable") and failures["COCOval2014000000000042"].startswith("wrong size")
    assert record["values"]["coverage"] == 0.6


def test_cli_dry_run_check_and_coverage_exit_codes(tmp_path):
    images = write_images(tmp_path / "images", items=("0", "3", "midjourney12", "partiprompts7"))
    runner = CliRunner()
    result = runner.invoke(cli(), ["eval", "dpg", str(images), "--questions", str(CSV), "--dry-run"])
    assert result.exit_code == 3 and "COCOval2014000000000042" in result.output
    result = runner.invoke(cli(), ["eval", "dpg", str(images), "--questions", str(CSV), "--dry-run", "--allow-missing"])
    assert result.exit_code == 0 and "would score 4/5 items" in result.output
    assert not list(tmp_path.glob("*.json*"))
    result = runner.invoke(cli(), ["dpg", "check", str(images), "--questions", str(CSV)])
    assert result.exit_code == 3 and "4/5 grids ok" in result.output
    result = runner.invoke(cli(), ["dpg", "questions", str(CSV), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["questions"] == 30
    result = runner.invoke(cli(), ["eval", "dpg", str(images), "--questions", str(tmp_path / "none.csv")])
    assert result.exit_code != 0


def test_cli_missing_weights_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path / "weights"))
    images = write_images(tmp_path / "images")
    result = CliRunner().invoke(cli(), ["eval", "dpg", str(images), "--questions", str(CSV),
                                        "--vqa-model", "Org/not-cached-model"])
    assert result.exit_code == 4 and "BLIP VQA weights not found" in result.output


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    """A random-init BLIP VQA with a real processor, saved like a hub checkpoint folder."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    folder = tmp_path_factory.mktemp("tiny-blip")
    questions = load_questions(CSV)
    words = sorted({word for item in questions.items.values() for q in item
                    for word in re.findall(r"[a-z]+|[^\sa-z]", q.question.lower())} | {"yes", "no"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + words
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = BlipConfig(
        text_config=dict(small, vocab_size=len(vocab), encoder_hidden_size=32, bos_token_id=vocab.index("[DEC]"),
                         pad_token_id=0, sep_token_id=vocab.index("[SEP]")),
        vision_config=dict(small, image_size=32, patch_size=8, initializer_range=0.02))  # default 1e-10 hides the image
    torch.manual_seed(0)
    BlipForQuestionAnswering(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_blip_backend_batches_and_reuses_tile_encodings(tiny_blip):
    from PIL import Image

    backend = TransformersBlipVQA(str(tiny_blip), device="cpu", batch_size=3)
    red, blue = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    questions = ["Is there a cat?", "Is the clock round?", "Is it night?", "Is there a cat?", "Is there a laptop?"]
    batched = backend.answer([red, red, blue, blue, red], questions)
    assert len(batched.yes) == 5 and all(0.0 < p < 1.0 for p in batched.p_yes)
    assert batched.yes == [p > 0.5 for p in batched.p_yes]
    one_by_one = [backend.answer([image], [q]).p_yes[0] for image, q in zip([red, red, blue, blue, red], questions)]
    np.testing.assert_allclose(batched.p_yes, one_by_one, rtol=1e-5, atol=1e-6)
    assert batched.p_yes[0] != pytest.approx(batched.p_yes[3], abs=1e-7)     # the image matters
    card = backend.card()
    assert card["backend"] == "transformers" and len(card["weights_sha256"]) == 64


def test_blip_backend_end_to_end_through_the_cli(tiny_blip, tmp_path):
    images = write_images(tmp_path / "images")
    out = tmp_path / "dpg.json"
    args = ["eval", "dpg", str(images), "--questions", str(CSV), "--vqa-model", str(tiny_blip),
            "--device", "cpu", "--out", str(out), "--batch-size", "16"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    record = read_result(out)
    assert record["extra"]["vqa_source"] == str(tiny_blip) and record["values"]["coverage"] == 1.0
    assert record["protocol"]["vqa"]["weights_sha256"] == TransformersBlipVQA(str(tiny_blip), device="cpu").weights_sha256
    for mode in ("reference", "corrected"):
        assert 0.0 <= record["values"][f"dpg_score_{mode}"] <= 100.0
    cache = images.with_name("images-dpg-answers.jsonl")
    lines = cache.read_text().count("\n")
    assert lines == 1 + 30 * 4
    assert CliRunner().invoke(cli(), args).exit_code == 0 and cache.read_text().count("\n") == lines
    assert read_result(out)["values"] == record["values"]


def test_modelscope_backend_without_the_package_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_modelscope(name, *args, **kwargs):
        if name.startswith("modelscope"):
            raise ImportError("No module named 'modelscope'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_modelscope)
    from evaluators.dpg.vqa import VQABackendUnavailable

    with pytest.raises(VQABackendUnavailable, match="pip install modelscope"):
        ModelscopeMplugVQA(device="cpu")


def test_modelscope_backend_counts_only_an_exact_yes():
    from PIL import Image

    replies = iter(["yes", "Yes", "no", "two"])
    asked = []

    def factory(model_id, device):
        asked.append((model_id, device))
        return lambda inputs: {"text": next(replies)}

    backend = ModelscopeMplugVQA(device="cpu", pipeline_factory=factory)
    answers = backend.answer([Image.new("RGB", (4, 4))] * 4, ["q1", "q2", "q3", "q4"])
    assert answers.yes == [True, False, False, False] and answers.text == ["yes", "Yes", "no", "two"]
    assert asked == [("damo/mplug_visual-question-answering_coco_large_en", "cpu")]
