"""The Snakemake workflow: config validation, dry runs for every config and profile, the embedded DAG."""
import os
import re
import signal
import subprocess
import time

import pytest
import yaml
from helpers import ENV, REPO, SNAKEMAKE, snakemake, write_tiny_benchmark

CONFIGS = sorted((REPO / "workflow" / "config").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("profile", ["default", "slurm", "kubernetes"])
def test_dry_run_works_for_every_config_and_profile(config, profile, tmp_path):
    # --forceall: plan every job even where this checkout already ran the config (the T2I demo writes its own folder)
    args = ["-n", "--forceall", "--profile", f"workflow/profiles/{profile}", "--configfile", str(config)]
    if profile == "kubernetes":  # the profile's object store needs credentials; check the rest against a local store
        args += ["--default-storage-provider", "fs", "--default-storage-prefix", str(tmp_path)]
    result = snakemake(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    evaluation = "rule t2i_eval:" if config.stem.startswith("t2i") else "rule eval_imagenet:"
    assert "rule report:" in result.stdout and evaluation in result.stdout


def test_unknown_sampler_and_preset_names_fail_when_the_dag_is_built(tmp_path):
    config = yaml.safe_load((REPO / "workflow" / "config" / "default.yaml").read_text())
    config["runs"]["pixeldit-s4"]["samplers"] = ["ab2-20-cgf"]
    config["runs"]["vanilla-dit-s4"]["preset"] = "digits32-s4-vanila-dit"
    path = tmp_path / "typos.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path), "--config", f"results={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "rule train" not in output, output[-3000:]
    assert "runs.pixeldit-s4.samplers: unknown sampler 'ab2-20-cgf'" in output, output[-3000:]
    assert "runs.vanilla-dit-s4.preset: unknown training preset 'digits32-s4-vanila-dit'" in output, output[-3000:]


def test_features_key_reaches_eval_imagenet_and_unknown_extractors_fail_when_the_dag_is_built(tmp_path):
    paper = snakemake("-n", "-p", "--forceall", "--configfile", "workflow/config/imagenet256.yaml",
                      "--config", f"results={tmp_path}")
    assert paper.returncode == 0, paper.stdout[-3000:] + paper.stderr[-3000:]
    assert "--features inception,dinov2" in paper.stdout
    embedded = snakemake("-n", "-p", "--forceall", "--configfile", "workflow/config/default.yaml",
                         "--config", f"results={tmp_path}")
    assert embedded.returncode == 0 and "pixeldit-bench eval imagenet" in embedded.stdout
    assert "--features" not in embedded.stdout          # inception alone: today's command
    config = yaml.safe_load((REPO / "workflow" / "config" / "default.yaml").read_text())
    config["features"] = ["inception", "dinov3"]
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path), "--config", f"results={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "features: unknown feature extractor 'dinov3'" in output, output[-3000:]


@pytest.mark.parametrize("config, jobs", [
    # 553 GenEval prompts and 1,065 DPG prompts in shards of 50: 12 + 22 generation jobs after one import
    ("t2i", {"t2i_import": 1, "t2i_generate_shard": 34, "t2i_finish": 2, "t2i_eval": 2, "report": 1, "all": 1}),
    ("t2i-demo", {"t2i_train": 1, "t2i_generate_shard": 2, "t2i_finish": 1, "t2i_eval": 2, "report": 1, "all": 1}),
])
def test_t2i_configs_plan_import_or_training_generation_and_scoring(config, jobs, tmp_path):
    result = snakemake("-n", "-p", "--configfile", f"workflow/config/{config}.yaml", "--config", f"results={tmp_path}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = _job_counts(result.stdout + result.stderr)
    for data_rule in ("prepare_dataset", "reference_statistics"):   # present unless made before in this checkout
        counts.pop(data_rule, None)
    assert counts == jobs
    if config == "t2i":
        assert "t2i generate" in result.stdout and "--prompts geneval --sampler paper-t2i-1024" in result.stdout


@pytest.mark.slow
def test_the_dag_resumes_after_a_kill_does_nothing_twice_and_reruns_only_what_a_deletion_needs(tmp_path):
    config, results = write_tiny_benchmark(tmp_path)
    base = [*SNAKEMAKE, "--cores", "2", "--configfile", str(config)]
    env = ENV
    # SIGINT back to its default: a test run started in the background (`cmd &`) inherits it ignored.
    first = subprocess.Popen(base, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = results / "runs" / "t4" / "training-state-0000001.pt"
    deadline = time.time() + 900
    while not state.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert state.exists(), "training never wrote its first state"
    os.killpg(first.pid, signal.SIGINT)   # Ctrl-C: Snakemake stops the job and removes its (sentinel) output
    first.wait(timeout=300)
    assert not (results / "runs" / "t4" / "network-snapshot-0000012.safetensors").exists(), "finished before the kill"

    second = subprocess.run([*base], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    train_log = (results / "logs" / "train" / "t4-0000012.log").read_text()
    assert re.search(r"resumed from training-state-00000(0[1-9]|1[01])\.pt", train_log), train_log[-2000:]
    assert (results / "report" / "report.md").exists()

    again = subprocess.run([*base, "-n"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr

    # Snakemake's own report over the finished run: the annotated grids, metric files, plots and tables
    page = tmp_path / "snakemake-report.html"
    made = subprocess.run([*base, "--report", str(page)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert made.returncode == 0 and page.stat().st_size > 100_000, made.stdout[-3000:] + made.stderr[-3000:]
    text = page.read_text()
    for expected in ("Samples", "Metrics", "Plots", "Tables", "samples-grid.png", "imagenet.json"):
        assert expected in text, f"{expected!r} missing from the Snakemake report"

    (results / "metrics" / "t4" / "0000001" / "euler-steps4-cfg1.0-int0.0-1.0-shift1.0" / "imagenet.json").unlink()
    rerun = subprocess.run([*base, "-n"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert _job_counts(rerun.stdout + rerun.stderr) == {"eval_imagenet": 1, "report": 1, "all": 1}


def _job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake dry run as {rule: count} (without the total)."""
    table = output[output.index("Job stats:"):].split("\n\n")[0].splitlines()[3:]
    counts = dict(line.split() for line in table if line.strip())
    counts.pop("total", None)
    return {rule: int(count) for rule, count in counts.items()}
