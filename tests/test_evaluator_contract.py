"""The evaluator contract: task specs are the one home of each benchmark's facts, and a new benchmark is one
package plus one registry line, reachable from the command line and the workflow without touching anything else."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluators.dpg.layout import TILES_PER_IMAGE
from evaluators.dpg.prompts import load_prompts
from evaluators.geneval import prompts as geneval_prompts
from evaluators.registry import EVALUATOR_PACKAGES, EVALUATORS, evaluate, get_evaluator, load_task, register_evaluator
from pixeldit.data.captions import CAPTION_SETS
from pixeldit.infra.results import make_result

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY_TASK = """name: tiny
version: "1"
description: Mean pixel value of a samples.npz (a test of the evaluator contract).
inputs: samples.npz
"""
TINY_PACKAGE = '''"""A tiny benchmark: the mean pixel value of a samples.npz."""
import numpy as np

from evaluators.registry import load_task, register_evaluator
from pixeldit.infra.files import sha256_file
from pixeldit.infra.results import make_result


@register_evaluator("tiny")
def mean_pixel(samples, scale="1"):
    with np.load(samples) as data:
        images = data["arr_0"]
    return make_result("tiny", load_task("tiny")["version"], {"mean_pixel": float(images.mean()) * float(scale)},
                       {"count": len(images), "scale": scale}, samples={"path": str(samples),
                                                                        "sha256": sha256_file(samples)})
'''


def test_task_specs_hold_the_facts_the_code_uses():
    assert set(EVALUATOR_PACKAGES) == {"imagenet", "geneval", "dpg", "digits"}
    assert load_task("geneval")["prompt_count"] == len(geneval_prompts.load_metadata())
    assert load_task("geneval")["samples_per_prompt"] == geneval_prompts.SAMPLES_PER_PROMPT
    assert load_task("dpg")["prompt_count"] == len(load_prompts())
    assert load_task("dpg")["samples_per_prompt"] == TILES_PER_IMAGE
    assert load_task("digits")["prompt_count"] == len(CAPTION_SETS["digits"][0])   # one prompt per digit
    with pytest.raises(KeyError, match="known: imagenet"):
        load_task("fid-in-a-hurry")


def test_the_registry_refuses_duplicates_and_checks_what_an_evaluator_returns(tmp_path, monkeypatch):
    get_evaluator("imagenet")
    with pytest.raises(ValueError, match="already registered"):
        register_evaluator("imagenet", lambda: None)
    get_evaluator("digits")   # imports the package, so the stand-in below replaces its registration
    monkeypatch.setitem(EVALUATORS, "digits", lambda path: make_result("digits-prompt-following", "0", {"accuracy": 1.0}, {}))
    with pytest.raises(ValueError, match="reports version '0' but its task spec says '1'"):
        evaluate("digits", [tmp_path / "x.npz"], tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def _copy_of_the_repository(destination: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=destination, check=True)
    subprocess.run([*git, "add", "-A"], cwd=destination, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy"], cwd=destination, check=True)
    return destination


def test_a_new_evaluator_is_one_package_and_one_registry_line(tmp_path):
    repo = _copy_of_the_repository(tmp_path / "repo")
    package = repo / "evaluators" / "tiny"
    package.mkdir()
    (package / "task.yaml").write_text(TINY_TASK)
    (package / "__init__.py").write_text(TINY_PACKAGE)
    registry = repo / "evaluators" / "registry.py"
    lines = registry.read_text().splitlines(keepends=True)
    [index] = [i for i, line in enumerate(lines) if line.startswith("EVALUATOR_PACKAGES = (")]
    lines[index] = lines[index].replace(")", ', "tiny")', 1)
    registry.write_text("".join(lines))
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert sorted(changed.splitlines()) == [" M evaluators/registry.py", "?? evaluators/tiny/"]

    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    samples = repo / "results" / "samples" / "tiny-run" / "0000001" / "euler-1" / "samples.npz"
    samples.parent.mkdir(parents=True)
    np.savez(samples, arr_0=images, arr_1=np.zeros(20, dtype=np.int64))
    env = {**os.environ, "PYTHONPATH": str(repo), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    # The command line: `eval tiny` exists without a line of CLI code.
    out = tmp_path / "tiny.json"
    cli = subprocess.run([sys.executable, "-m", "pixeldit.cli", "eval", "tiny", str(samples), "--out", str(out),
                          "--option", "scale=2"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    record = json.loads(out.read_text())
    assert record["values"]["mean_pixel"] == pytest.approx(2 * images.mean())
    assert record["evaluator"] == {"name": "tiny", "version": "1", "backend": None}
    assert record["protocol"] == {"count": 20, "scale": "2"}

    # The workflow: the generic eval rule scores the sample set once the config lists the evaluator.
    target = "results/metrics/tiny-run/0000001/euler-1/tiny.json"
    flow = subprocess.run([str(BIN / "snakemake"), "--cores", "1", "--configfile", "workflow/config/default.yaml",
                           "--config", 'evaluators=["imagenet","tiny"]', "--allowed-rules", "eval_registered",
                           "--", target], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert flow.returncode == 0, flow.stdout + flow.stderr
    record = json.loads((repo / target).read_text())
    assert record["values"]["mean_pixel"] == pytest.approx(images.mean())
    assert record["samples"]["path"].endswith("results/samples/tiny-run/0000001/euler-1/samples.npz")
