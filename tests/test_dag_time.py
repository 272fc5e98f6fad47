"""benchmarks/dag_time.py: the job-time sums and the floor that the README's wall-time claims rest on."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dag_time.py"
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_timing(path: Path, seconds: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + (f"{seconds}\t0:00:00\t1\t1\t1\t1\t0\t0\t99\t{seconds}\n" if seconds is not None else ""))


def snakemake_log(path: Path, jobs: list[tuple[str, int, int, int]]) -> Path:
    """A Snakemake run log as Snakemake writes it, for jobs (rule, threads, start s, end s) from 21:32:28."""
    origin = datetime(2026, 12, 7, 21, 32, 28)
    events = []
    for jobid, (rule, threads, start, end) in enumerate(jobs):
        header = [f"localrule {rule}:", "    output: x", f"    jobid: {jobid}", "    reason: Missing output files: x"]
        header += [f"    threads: {threads}"] if threads > 1 else []
        events += [(start, 1, header + ["Shell command: pixeldit-bench x"]),
                   (end, 0, [f"Finished jobid: {jobid} (Rule: {rule})", f"{jobid + 1} of {len(jobs)} steps done"])]
    lines = ["Building DAG of jobs...", "Job stats:"]
    for second, _, block in sorted(events, key=lambda event: event[:2]):
        stamp = origin + timedelta(seconds=second)
        lines += ["", f"[{stamp:%a %b} {stamp.day:2d} {stamp:%H:%M:%S %Y}]", *block]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    write_timing(root / "benchmarks" / "train" / "a-0000020.tsv", 300.0)
    write_timing(root / "benchmarks" / "train" / "b-0000020.tsv", 200.0)
    write_timing(root / "benchmarks" / "sample" / "a-0000020-ab2-0000000-0000099.tsv", 30.0)
    write_timing(root / "benchmarks" / "report.tsv", 10.0)
    return root


def test_floor_is_the_job_seconds_over_the_cores(results, tmp_path):
    # two cores: the trainings side by side, the sample after the short one, the report alone at the end
    log = snakemake_log(tmp_path / "run.log", [("train", 1, 0, 300), ("train", 1, 0, 200), ("sample_shard", 1, 200, 230),
                                               ("report", 1, 490, 500)])
    out = tmp_path / "dag_time.json"
    done = run(str(results), "--cores", "2", "--log", str(log), "--setup-s", "100", "--budget-s", "300",
               "--out", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["job_seconds_total"] == 540.0
    assert report["stages"]["train"] == {"jobs": 2, "seconds": 500.0, "share": round(500 / 540, 4),
                                         "shortest_job_s": 200.0, "longest_job_s": 300.0}
    assert list(report["stages"]) == ["train", "sample", "report"]       # the largest stage first
    assert report["floor_s"] == 300.0             # the longest job bounds it here, not 540 / 2
    assert report["measured_s"] == 500.0 and report["jobs_finished"] == 4 and report["jobs_timed"] == 4
    # idle: one core 230-300, both 300-490, one 490-500 -> 70 + 380 + 10 core-seconds
    assert report["idle_core_s"] == 460.0
    assert report["idle_spans_10s_or_more"] == [
        {"from_s": 230.0, "to_s": 300.0, "idle_cores": 1, "running": ["train"]},
        {"from_s": 300.0, "to_s": 490.0, "idle_cores": 2, "running": []},
        {"from_s": 490.0, "to_s": 500.0, "idle_cores": 1, "running": ["report"]}]
    assert report["floor_fits_budget"] is False and report["speedup_needed"] == 1.5   # 300 s into 200 s


def test_floor_with_many_cores_fits_a_generous_budget(results, tmp_path):
    log = snakemake_log(tmp_path / "run.log", [("reference_statistics", 2, 0, 60), ("train", 1, 60, 600)])
    out = tmp_path / "dag_time.json"
    assert run(str(results), "--cores", "1", "--log", str(log), "--setup-s", "60", "--budget-s", "700",
               "--out", str(out)).returncode == 0
    report = json.loads(out.read_text())
    assert report["floor_s"] == 540.0 and report["floor_fits_budget"] is True and report["speedup_needed"] == 1.0
    assert report["idle_core_s"] == 0.0
    assert run(str(results), "--cores", "2", "--log", str(log), "--out", str(out)).returncode == 0
    # the two-thread job fills both cores; the training alone leaves one idle
    assert json.loads(out.read_text())["idle_core_s"] == 540.0


def test_an_unfinished_job_is_named(results, tmp_path):
    write_timing(results / "benchmarks" / "eval" / "a-0000020-ab2-imagenet.tsv", None)
    log = snakemake_log(tmp_path / "run.log", [("train", 1, 0, 300)])
    done = run(str(results), "--log", str(log), "--out", str(tmp_path / "x.json"))
    assert done.returncode != 0 and "a-0000020-ab2-imagenet.tsv has no timing row" in done.stderr


def test_a_results_folder_without_timings_says_what_to_run(tmp_path):
    done = run(str(tmp_path), "--out", str(tmp_path / "x.json"))
    assert done.returncode != 0 and "run the DAG first" in done.stderr
