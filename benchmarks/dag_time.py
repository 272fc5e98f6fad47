"""Where a finished DAG's time went, and the least wall time any schedule of its jobs could take; writes JSON.

    python benchmarks/dag_time.py results --cores 2 --setup-s 163 --budget-s 1200 \
        --out benchmarks/results/cpu/dag_time_default_COMMIT.json

Every rule has a Snakemake `benchmark:` file under RESULTS/benchmarks/<stage>/; its wall seconds `s` are used (its
`cpu_time` is polled and misses the end of short jobs). The Snakemake log of the run (the newest under
.snakemake/log/, or --log) gives the DAG's wall time, from its first job's start to its last job's end, and each
job's start, end and threads.

The floor, max(sum of job seconds / cores, longest job), counts every job as one core (still a lower bound where a
job takes more): no scheduler beats it on `cores` cores without making the jobs themselves faster. So
`measured / floor` is what the order of jobs and the gaps between them cost, `floor + set-up` against a budget says
whether scheduling alone could meet the budget, and the JSON lists the spans of 10 s or more where cores stood idle,
with the rules that ran then: where an order or a priority would gain. Job seconds include each job's process
start-up (imports); the shortest job of each stage bounds that from above.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.host import cpu_isa  # noqa: E402

# Snakemake stamps each job's start and end as "[Mon Dec  7 21:32:28 2026]".
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
JOB_ID = re.compile(r"^\s+jobid: (\d+)$")
JOB_THREADS = re.compile(r"^\s+threads: (\d+)$")
JOB_FINISHED = re.compile(r"^Finished jobid: (\d+)")


def job_seconds(results: Path) -> dict[str, dict[str, float]]:
    """{stage: {job: wall seconds}} from RESULTS/benchmarks; the stage is the folder (the file's stem at the top)."""
    root = results / "benchmarks"
    tables = sorted(root.rglob("*.tsv"))
    if not tables:
        raise SystemExit(f"no Snakemake benchmark files under {root}: run the DAG first (README command (a))")
    stages: dict[str, dict[str, float]] = defaultdict(dict)
    for table in tables:
        with table.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows:
            raise SystemExit(f"{table} has no timing row: its job did not finish; rerun the DAG")
        relative = table.relative_to(root)
        stage = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        stages[stage][str(relative.with_suffix(""))] = float(rows[-1]["s"])
    return stages


@dataclass
class Job:
    rule: str
    threads: int
    start: datetime
    end: datetime | None = None


def scheduled_jobs(log: Path) -> list[Job]:
    """Each job of the run as the Snakemake log stamps it: rule, threads, start and end."""
    jobs: dict[int, Job] = {}
    stamp, rule, job = None, None, None
    for line in log.read_text().splitlines():
        if match := STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif match := JOB_HEADER.match(line):
            rule = match.group(1)
        elif (match := JOB_ID.match(line)) and rule is not None:
            job = jobs[int(match.group(1))] = Job(rule, 1, stamp)
            rule = None
        elif (match := JOB_THREADS.match(line)) and job is not None:
            job.threads = int(match.group(1))
        elif (match := JOB_FINISHED.match(line)) and int(match.group(1)) in jobs:
            jobs[int(match.group(1))].end = stamp
    finished = [job for job in jobs.values() if job.end is not None]
    if not finished:
        raise SystemExit(f"{log} has no finished job: is it the Snakemake log of a run (not a dry run)?")
    return finished


def idle_cores(jobs: list[Job], cores: int, shortest_s: float = 10) -> tuple[float, list[dict]]:
    """Core-seconds no job held (a job holds its `threads`), and the spans of `shortest_s` or more where some
    cores were idle, with the rules that ran then: where a better order or priority would have gained."""
    origin = min(job.start for job in jobs)
    # (start s, end s, job) from the first job's start
    timeline = [((job.start - origin).total_seconds(), (job.end - origin).total_seconds(), job) for job in jobs]
    edges = sorted({second for start, end, _ in timeline for second in (start, end)})
    idle_total, spans = 0.0, []
    for start, end in zip(edges, edges[1:]):
        running = [job for job_start, job_end, job in timeline if job_start <= start and job_end >= end]
        idle, rules = max(0, cores - sum(job.threads for job in running)), sorted(job.rule for job in running)
        idle_total += idle * (end - start)
        if idle and spans and spans[-1]["to_s"] == start and spans[-1]["running"] == rules:
            spans[-1]["to_s"] = end
        elif idle:
            spans.append({"from_s": start, "to_s": end, "idle_cores": idle, "running": rules})
    return idle_total, [span for span in spans if span["to_s"] - span["from_s"] >= shortest_s]


def newest_log(workdir: Path) -> Path:
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        raise SystemExit(f"no Snakemake log under {workdir / '.snakemake' / 'log'}; pass --log")
    return logs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the DAG's results folder (its benchmarks/ holds the job timings)")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="the cores the DAG ran on")
    parser.add_argument("--log", type=Path, help="the run's Snakemake log (default: the newest beside RESULTS)")
    parser.add_argument("--setup-s", type=float, help="seconds of set-up before the DAG (README command (a))")
    parser.add_argument("--budget-s", type=float, help="a wall-time budget for set-up plus DAG, to check the floor against")
    parser.add_argument("--load", type=float, help="the 1-minute load average when the run started")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    stages = job_seconds(args.results)
    log = args.log or newest_log(args.results.resolve().parent)
    run = scheduled_jobs(log)
    measured = (max(job.end for job in run) - min(job.start for job in run)).total_seconds()
    idle_core_s, idle_spans = idle_cores(run, args.cores)
    every_job = [seconds for timings in stages.values() for seconds in timings.values()]
    total = sum(every_job)
    floor = max(total / args.cores, max(every_job))
    report = {
        "benchmark": "dag_time", "results": str(args.results), "log": str(log), "cores": args.cores,
        "cpu": cpu_isa(), "load_at_start_1min": args.load,
        "jobs_finished": len(run), "jobs_timed": len(every_job),
        "stages": {stage: {"jobs": len(timings), "seconds": round(sum(timings.values()), 2),
                           "share": round(sum(timings.values()) / total, 4),
                           "shortest_job_s": round(min(timings.values()), 2),
                           "longest_job_s": round(max(timings.values()), 2)}
                   for stage, timings in sorted(stages.items(), key=lambda item: -sum(item[1].values()))},
        "job_seconds_total": round(total, 2),
        "floor_s": round(floor, 2), "measured_s": measured, "measured_over_floor": round(measured / floor, 3),
        "idle_core_s": idle_core_s, "idle_spans_10s_or_more": idle_spans,
    }
    if args.setup_s is not None:
        report["setup_s"] = args.setup_s
        report["floor_with_setup_s"] = round(floor + args.setup_s, 2)
        report["measured_with_setup_s"] = measured + args.setup_s
    if args.budget_s is not None:
        if args.setup_s is None:
            parser.error("--budget-s needs --setup-s (the budget covers set-up and DAG)")
        report["budget_s"] = args.budget_s
        report["floor_fits_budget"] = floor + args.setup_s <= args.budget_s
        # How much faster every job would have to be for the floor to fit (1.0: it fits as the jobs are).
        report["speedup_needed"] = round(max(1.0, floor / max(args.budget_s - args.setup_s, 1e-9)), 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
