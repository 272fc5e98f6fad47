"""GenEval vendored data, folder layout, aggregation and the thin CLI (no models)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from evaluators.geneval import prompts
from evaluators.geneval.summary import format_summary, read_results, summarize
from evaluators.registry import get_evaluator
from pixeldit.cli.eval_geneval import geneval_app

FIXTURES = Path(__file__).parent / "fixtures" / "geneval"
runner = CliRunner()


def test_vendored_files_match_the_published_checksums():
    for name, sha1 in prompts.SHA1.items():
        assert prompts.data_sha1(name) == sha1, f"{name} changed; restore it from djghosh13/geneval"
    prompts.verify_data()
    assert (prompts.DATA / "geneval.LICENSE").read_text().startswith(
        "evaluation_metadata.jsonl and object_names.txt in this folder are copied unchanged")


def test_metadata_counts_per_task():
    metadata = prompts.load_metadata()
    assert len(metadata) == 553 and len(prompts.load_object_names()) == 80
    assert Counter(m["tag"] for m in metadata) == {"single_object": 80, "two_object": 99, "counting": 80,
                                                   "colors": 94, "position": 100, "color_attr": 100}
    assert tuple(dict.fromkeys(m["tag"] for m in metadata)) == prompts.TASKS


def test_folder_layout_round_trip(tmp_path):
    folders = prompts.write_prompt_folders(tmp_path)
    assert [f.name for f in folders[:2]] == ["00000", "00001"] and folders[-1].name == "00552"
    assert json.loads((tmp_path / "00012" / "metadata.jsonl").read_text()) == prompts.load_metadata()[12]
    assert prompts.sample_path(tmp_path, 12, 3) == tmp_path / "00012" / "samples" / "0003.png"
    for sample in range(4):
        Image.new("RGB", (8, 8)).save(prompts.sample_path(tmp_path, 12, sample))
    Image.new("RGB", (8, 8)).save(tmp_path / "00012" / "grid.png")               # ignored
    Image.new("RGB", (8, 8)).save(tmp_path / "00012" / "samples" / "grid.png")   # not <digits>.png
    (tmp_path / "notes").mkdir()                                                 # not a prompt folder
    found = list(prompts.iter_samples(tmp_path))
    assert [s.name for s in found] == [f"00012/samples/{i:04d}.png" for i in range(4)]
    assert found[0].metadata["prompt"] == prompts.load_metadata()[12]["prompt"]


def test_folder_without_metadata_is_refused(tmp_path):
    (tmp_path / "00000" / "samples").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="eval geneval prompts --out"):
        list(prompts.iter_samples(tmp_path))


def test_summary_equals_the_reference_printout():
    rows = read_results(FIXTURES / "results_subset.jsonl")
    expected = (FIXTURES / "results_subset.reference-summary.txt").read_text().strip()
    assert format_summary(summarize(rows)) == expected
    numbers = summarize(rows)
    assert numbers["overall"] == round(sum(numbers["tasks"].values()) / 6, 5) == 0.42105


def test_summary_counts_a_prompt_correct_when_any_image_is():
    metadata = json.dumps({"tag": "counting"})
    rows = [{"tag": "counting", "metadata": metadata, "correct": c} for c in (False, True, False, False)]
    numbers = summarize(rows)
    assert numbers["correct_images"] == 0.25 and numbers["correct_prompts"] == 1.0 and numbers["overall"] == 0.25


def test_torn_last_line_is_dropped_but_a_bad_middle_line_is_an_error(tmp_path):
    good = (FIXTURES / "results_subset.jsonl").read_text().splitlines()[:3]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(good) + "\n" + good[0][:30])
    assert len(read_results(path)) == 3
    path.write_text("\n".join([good[0], "{oops", good[1]]))
    with pytest.raises(ValueError, match="results.jsonl:2 is not JSON"):
        read_results(path)


def test_evaluator_is_registered():
    assert get_evaluator("geneval").__name__ == "evaluate_geneval"


# ------------------------------------------------------------------ CLI

def test_cli_prompts_writes_the_layout_and_dry_run_writes_nothing(tmp_path):
    dry = runner.invoke(geneval_app, ["prompts", "--out", str(tmp_path / "dry"), "--dry-run"])
    assert dry.exit_code == 0 and "553 folders" in dry.output and not (tmp_path / "dry").exists()
    real = runner.invoke(geneval_app, ["prompts", "--out", str(tmp_path / "images")])
    assert real.exit_code == 0, real.output
    assert len(list((tmp_path / "images").iterdir())) == 553


def test_cli_summary_prints_the_reference_text():
    result = runner.invoke(geneval_app, ["summary", str(FIXTURES / "results_subset.jsonl")])
    assert result.exit_code == 0
    assert result.output.strip() == (FIXTURES / "results_subset.reference-summary.txt").read_text().strip()


def test_cli_score_is_the_default_command_and_refuses_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path / "weights"))
    prompts.write_prompt_folders(tmp_path / "images", prompts.load_metadata()[:2])
    Image.new("RGB", (8, 8)).save(prompts.sample_path(tmp_path / "images", 0, 0))
    dry = runner.invoke(geneval_app, [str(tmp_path / "images"), "--detector", "transformers", "--dry-run"])
    assert dry.exit_code == 4   # missing weights: the one exit code for a missing external file
    assert "1 images" in dry.output and "pixeldit-bench weights fetch geneval-clip-vit-l-14" in dry.output
    real = runner.invoke(geneval_app, [str(tmp_path / "images"), "--detector", "transformers", "--device", "cpu"])
    assert real.exit_code == 4 and "weights fetch" in real.output
    assert not (tmp_path / "images-geneval").exists()


def test_cli_bad_input_and_usage_exit_codes(tmp_path):
    missing = runner.invoke(geneval_app, [str(tmp_path / "nowhere"), "--dry-run"])
    assert missing.exit_code == 1 and "is not a folder" in missing.output
    unknown = runner.invoke(geneval_app, [str(tmp_path), "--detector", "yolo", "--dry-run"])
    assert unknown.exit_code == 1 and "unknown detector backend 'yolo'" in unknown.output
    usage = runner.invoke(geneval_app, ["prompts"])
    assert usage.exit_code == 2
