"""The cluster path for real: the tiny benchmark through sbatch on a single-node SLURM (.ci/slurm/start.sh)."""
import json
import re
import subprocess
from pathlib import Path

import pytest
from helpers import ENV, REPO, SNAKEMAKE, snakemake, write_tiny_benchmark

START = REPO / ".ci" / "slurm" / "start.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# Every rule of the tiny benchmark that is not a localrule, so each must have gone through sbatch.
SUBMITTED_RULES = {"prepare_dataset", "reference_statistics", "train", "sample_shard", "merge_samples",
                   "eval_imagenet"}


@pytest.fixture(scope="module")
def slurm_cluster():
    """Installs and starts the cluster (the daemons stay up, see the script); skips only where that fails."""
    result = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        pytest.skip(f"SLURM could not be installed or started: `bash {START.relative_to(REPO)}` exited "
                    f"{result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}")


def site_overrides(config):
    """The profile's partition and account are placeholders for users: this cluster's instead. Every rule gets
    1 CPU and 1000 MB, which any CI node has (the profile asks up to 64 CPUs, rules up to 8000 MB, and slurmctld
    refuses a job larger than the node; without cgroups nothing enforces them while the job runs)."""
    listed = snakemake("--list-rules", "--configfile", str(config))
    assert listed.returncode == 0, listed.stdout[-3000:] + listed.stderr[-3000:]
    rules = listed.stdout.split()
    return ["--default-resources", "slurm_partition=debug", "slurm_account=pixeldit-ci", "runtime=10",
            "--set-resources", *(f"{rule}:{key}" for rule in rules for key in ("cpus_per_task=1", "mem_mb=1000"))]


def metric_values(results):
    return {str(path.relative_to(results)): json.loads(path.read_text())["values"]
            for path in sorted((results / "metrics").rglob("*.json"))}


@pytest.mark.slow
def test_the_tiny_benchmark_runs_through_sbatch_and_scores_like_a_local_run(slurm_cluster, tmp_path):
    # runtime 10: the jobs' SLURM time limit (the DAG test's 1 minute is not enforced locally)
    local_config, local_results = write_tiny_benchmark(tmp_path / "local", kimg=2, runtime=10)
    config, results = write_tiny_benchmark(tmp_path / "slurm", kimg=2, runtime=10)
    logs = tmp_path / "slurm_logs"
    # The local run alongside: the SLURM run mostly waits for the scheduler and the plugin's polling.
    local = subprocess.Popen([*SNAKEMAKE, "--cores", "2", "--configfile", str(local_config)], cwd=REPO, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cluster = subprocess.run(
        [*SNAKEMAKE, "--executor", "slurm", "--workflow-profile", str(PROFILE.relative_to(REPO)),
         "--configfile", str(config), *site_overrides(config),
         # No accounting on this cluster (see the script): poll with squeue, from the first second on.
         "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
         "--slurm-logdir", str(logs), "--slurm-keep-successful-logs"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1800)
    local_output = local.communicate(timeout=1800)[0]
    output = cluster.stdout + cluster.stderr
    assert cluster.returncode == 0, output[-5000:]
    assert local.returncode == 0, local_output[-5000:]

    submitted = dict(SUBMITTED.findall(output))
    assert {re.search(r"/rule_(\w+)/", log)[1] for log in submitted.values()} == SUBMITTED_RULES, output[-5000:]
    for job_id, log in submitted.items():
        assert log.startswith(str(logs)) and log.endswith(f"/{job_id}.log") and "SNAKEMAKE" in Path(log).read_text()
    states = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%T", "--jobs", ",".join(submitted)],
                            capture_output=True, text=True, timeout=60)
    assert dict(line.split("|") for line in states.stdout.split()) == dict.fromkeys(submitted, "COMPLETED"), (
        states.stdout + states.stderr)

    values = metric_values(results)
    assert len(values) == 2 and values == metric_values(local_results)
