"""The `pixeldit-bench` app: the workflow order, help everywhere, --dry-run on writing commands, one set of
exit codes, whole names in piped tables."""
import json
import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from pixeldit.cli import app
from pixeldit.cli.console import EXIT_BAD_INPUT, EXIT_MISSING_FILE

runner = CliRunner()


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path, command
        if hasattr(command, "commands"):  # a group (typer may vendor its own click classes)
            yield from _commands(command, path)


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_app_has_every_stage():
    names = {path[0] for path, _ in COMMANDS}
    assert {"data", "train", "sample", "eval", "weights", "models", "report", "ls", "baselines"} <= names


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=lambda p: " ".join(p))
def test_every_command_has_help(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_lists_the_commands_in_the_order_of_the_workflow():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    listed = [line.split()[1] for line in result.output.splitlines() if line.startswith("│ ") and len(line.split()) > 1]
    stages = ["data", "train", "sample", "eval", "report", "models", "weights", "ls", "baselines"]
    assert [name for name in listed if name in stages] == stages
    assert "Exit codes" in result.output


WRITING = [("train",), ("sample", "run"), ("sample", "merge"), ("data", "prepare"), ("weights", "fetch"),
           ("weights", "import", "c2i"), ("weights", "import", "t2i"), ("report",), ("t2i", "generate"),
           ("t2i", "finish"), ("latent", "train-ae"), ("latent", "cache"), ("latent", "reconstruct")]


@pytest.mark.parametrize("path", WRITING, ids=lambda p: " ".join(p))
def test_writing_commands_offer_dry_run(path):
    command = dict(COMMANDS)[path]
    assert "--dry-run" in {opt for param in command.params for opt in param.opts}


def test_train_dry_run_prints_the_resolved_config(tmp_path):
    result = runner.invoke(app, ["train", "digits32-s4", "--dry-run", "--set", "lr=2e-4", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    resolved = json.loads(result.output)
    assert resolved["lr"] == 2e-4 and resolved["model"] == "PixelDiT-S/4" and resolved["run_dir"] == str(tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_ls_shows_how_far_each_run_trained_and_what_is_left(tmp_path):
    run = tmp_path / "runs" / "half-done"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "PixelDiT-S/4", "total_kimg": 20}))
    (run / "stats.jsonl").write_text(json.dumps({"kimg": 10.5, "images_per_second": 50.0}) + "\n")
    (run / "training-state-0000010.pt").write_bytes(b"")
    (run / "network-snapshot-0000010.safetensors").write_bytes(b"")
    result = runner.invoke(app, ["ls", "--results", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)["runs"]
    # a rerun continues from the 10-kimg state: 10 kimg left, 200 s at the last speed
    assert row["progress"] == "10.5/20 kimg (52%)" and row["left"] == "10 kimg (~3m20s at 50 img/s)", row
    assert row["status"] == "resumable from 10 kimg" and row["snapshots"] == [10]


def test_ls_lists_seed_range_sample_sets(tmp_path):
    """A seed range's shards sit in range-<r>/ one level below the sampler folder; ls lists it beside the rest."""
    sampler = tmp_path / "samples" / "pixeldit-s4" / "0000020" / "ab2-20-cfg"
    (sampler / "range-1").mkdir(parents=True)
    (sampler / "samples.json").write_text(json.dumps({"count": 200}))
    (sampler / "range-1" / "shard-0000100-0000199.npz").write_bytes(b"")
    result = runner.invoke(app, ["ls", "--results", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["samples"]: row for row in json.loads(result.output)["samples"]}
    assert rows["pixeldit-s4/0000020/ab2-20-cfg"]["status"] == "merged (200)"
    assert rows["pixeldit-s4/0000020/ab2-20-cfg/range-1"] == {"samples": "pixeldit-s4/0000020/ab2-20-cfg/range-1",
                                                                "shards": 1, "status": "partial"}


def test_bad_input_exits_with_code_1_and_a_message():
    result = runner.invoke(app, ["train", "digits32-s4", "--set", "no_such_field=1", "--dry-run"])
    assert result.exit_code == 1 and "unknown training setting" in result.output
    for kimg in ("0", "-3"):   # once exited 0 naming a snapshot it never wrote
        result = runner.invoke(app, ["train", "digits32-s4", "--kimg", kimg, "--dry-run"])
        assert result.exit_code == 1 and "budget must be at least 1 kimg" in result.output, result.output
    result = runner.invoke(app, ["ls", "--results", "/nonexistent/results"])
    assert result.exit_code == 1 and "not a folder" in result.output
    result = runner.invoke(app, ["weights", "verify", "no-such-weight"])
    assert result.exit_code == EXIT_BAD_INPUT and "unknown weight file 'no-such-weight'" in result.output


def test_a_missing_weight_file_exits_with_code_4_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path))
    result = runner.invoke(app, ["weights", "verify", "inception"])
    assert result.exit_code == EXIT_MISSING_FILE, result.output
    assert "pixeldit-bench weights fetch inception" in result.output


def test_dry_run_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path / "weights"))
    fetch = runner.invoke(app, ["weights", "fetch", "inception", "--dry-run"])
    assert fetch.exit_code == 0 and "would download" in fetch.output, fetch.output
    prepare = runner.invoke(app, ["data", "prepare", "digits32", "--out", str(tmp_path / "digits"), "--dry-run"])
    assert prepare.exit_code == 0 and "would write" in prepare.output, prepare.output
    assert list(tmp_path.iterdir()) == []


def test_piped_tables_keep_whole_names():
    piped = subprocess.run([sys.executable, "-m", "pixeldit.cli", "models"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=120,
                           env={key: value for key, value in os.environ.items() if key != "COLUMNS"})
    assert piped.returncode == 0, piped.stderr
    assert "PixelDiT-XL/16" in piped.stdout and "…" not in piped.stdout


def test_console_script_and_module_behave_the_same():
    via_module = subprocess.run([sys.executable, "-m", "pixeldit.cli", "models", "--json", "--res", "32"],
                                capture_output=True, text=True, timeout=120)
    assert via_module.returncode == 0, via_module.stderr
    via_runner = runner.invoke(app, ["models", "--json", "--res", "32"])
    assert json.loads(via_module.stdout) == json.loads(via_runner.output)


@pytest.mark.parametrize("setting, message", [
    ("lr=fast", "lr='fast' is not of type float"),
    ("batch_size=3.5", "batch_size=3.5 is not of type int"),
    ("batch_size=0", "batch_size=0 must be positive"),
    ("ablation=vanila-dit", "unknown ablation rung 'vanila-dit'; known: vanilla-dit"),
    ("ema_decay=true", "ema_decay=True is not of type float or null"),
])
def test_bad_training_settings_fail_before_anything_is_written(tiny_dataset, tmp_path, setting, message):
    """Issue 17: these were tracebacks (or a late error) after config.json was written, which then blocked the
    corrected command as "started with other settings"."""
    out = tmp_path / "run"
    for extra in (["--dry-run"], []):
        result = CliRunner().invoke(app, ["train", "digits32-s4", "--dataset", str(tiny_dataset), "--out", str(out),
                                          "--set", setting, *extra])
        assert result.exit_code == EXIT_BAD_INPUT and message in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert not out.exists()
