"""The Snakemake workflow: config validation, dry runs for every config and profile, the embedded DAG."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "workflow" / "config").glob("*.yaml"))
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=REPO, timeout=300):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("profile", ["default", "slurm", "kubernetes"])
def test_dry_run_works_for_every_config_and_profile(config, profile, tmp_path):
    args = ["-n", "--profile", f"workflow/profiles/{profile}", "--configfile", str(config)]
    if profile == "kubernetes":  # the profile's object store needs credentials; check the rest against a local store
        args += ["--default-storage-provider", "fs", "--default-storage-prefix", str(tmp_path)]
    result = snakemake(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rule report:" in result.stdout and "rule eval_imagenet:" in result.stdout


def test_slurm_dry_run_shows_the_sbatch_resources():
    result = snakemake("-n", "--profile", "workflow/profiles/slurm", "--configfile", "workflow/config/imagenet256.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    train_job = result.stdout[result.stdout.index("rule train:"):]
    train_job = train_job[:train_job.index("\n\n")]
    for resource in ("gpu=8", "mem_mb=400000", "runtime=2880", "slurm_partition=gpu", "tasks_per_gpu=0"):
        assert resource in train_job
    assert "torchrun --standalone --nproc_per_node 8 -m pixeldit.cli train imagenet256-xl" in result.stdout


def test_a_command_line_config_replaces_the_embedded_default():
    result = snakemake("-n", "--configfile", "workflow/config/imagenet512.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "digits32" not in result.stdout


@pytest.mark.parametrize("mutation, message", [
    (lambda c: c.update(sampling={**c["sampling"], "shard_sise": 10}), "shard_sise"),
    (lambda c: c["runs"]["pixeldit-s4"].pop("kimg"), "pixeldit-s4"),
    (lambda c: c.update(evaluators=["fid-pytorch"]), "fid-pytorch"),
    (lambda c: c["dataset"].update(resolution="32px"), "32px"),
])
def test_config_schema_errors_name_the_bad_key(mutation, message, tmp_path):
    config = yaml.safe_load((REPO / "workflow" / "config" / "default.yaml").read_text())
    mutation(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
