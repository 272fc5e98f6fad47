"""The `pixeldit-bench` app: every command has help, writing commands have --dry-run, errors exit 1."""
import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from pixeldit.cli import app

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


WRITING = [("train",), ("sample", "run"), ("sample", "merge"), ("data", "prepare"), ("weights", "import-official"),
           ("report",), ("t2i", "generate"), ("t2i", "import"), ("t2i", "finish")]


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


def test_bad_input_exits_with_code_1_and_a_message():
    result = runner.invoke(app, ["train", "digits32-s4", "--set", "no_such_field=1", "--dry-run"])
    assert result.exit_code == 1 and "unknown training setting" in result.output
    result = runner.invoke(app, ["ls", "--results", "/nonexistent/results"])
    assert result.exit_code == 1 and "not a folder" in result.output


def test_console_script_and_module_behave_the_same():
    via_module = subprocess.run([sys.executable, "-m", "pixeldit.cli", "models", "--json", "--res", "32"],
                                capture_output=True, text=True, timeout=120)
    assert via_module.returncode == 0, via_module.stderr
    via_runner = runner.invoke(app, ["models", "--json", "--res", "32"])
    assert json.loads(via_module.stdout) == json.loads(via_runner.output)
