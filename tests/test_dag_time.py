"""benchmarks/dag_time.py: the job-time sums and the floor that the README's wall-time claims rest on."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dag_time.py"
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_timing(path: Path, seconds: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + (f"{seconds}\t0:00:00\t1\t1\t1\t1\t0\t0\t99\t{seconds}\n" if seconds is not None else ""))


def snakemake_log(path: Path, stamps: list[str], finished: int) -> Path:
    lines = []
    for stamp in stamps:
        lines += [f"[{stamp}]", "localrule train:"]
    lines += [f"Finished jobid: {job} (Rule: train)" for job in range(finished)]
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
    log = snakemake_log(tmp_path / "run.log", ["Mon Dec  7 21:32:28 2026", "Mon Dec  7 21:40:48 2026"], 4)
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
    assert report["floor_fits_budget"] is False and report["speedup_needed"] == 1.5   # 300 s into 200 s


def test_floor_with_many_cores_fits_a_generous_budget(results, tmp_path):
    log = snakemake_log(tmp_path / "run.log", ["Mon Dec  7 21:32:28 2026", "Mon Dec  7 21:42:28 2026"], 4)
    out = tmp_path / "dag_time.json"
    assert run(str(results), "--cores", "1", "--log", str(log), "--setup-s", "60", "--budget-s", "700",
               "--out", str(out)).returncode == 0
    report = json.loads(out.read_text())
    assert report["floor_s"] == 540.0 and report["floor_fits_budget"] is True and report["speedup_needed"] == 1.0


def test_an_unfinished_job_is_named(results, tmp_path):
    write_timing(results / "benchmarks" / "eval" / "a-0000020-ab2-imagenet.tsv", None)
    log = snakemake_log(tmp_path / "run.log", ["Mon Dec  7 21:32:28 2026", "Mon Dec  7 21:40:48 2026"], 4)
    done = run(str(results), "--log", str(log), "--out", str(tmp_path / "x.json"))
    assert done.returncode != 0 and "a-0000020-ab2-imagenet.tsv has no timing row" in done.stderr


def test_a_results_folder_without_timings_says_what_to_run(tmp_path):
    done = run(str(tmp_path), "--out", str(tmp_path / "x.json"))
    assert done.returncode != 0 and "run the DAG first" in done.stderr
