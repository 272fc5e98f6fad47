"""Where a finished DAG's time went, and the least wall time any schedule of its jobs could take; writes JSON.

    python benchmarks/dag_time.py results --cores 2 --setup-s 163 --budget-s 1200 \
        --out benchmarks/results/cpu/dag_time_default.json

Every rule has a Snakemake `benchmark:` file under RESULTS/benchmarks/<stage>/ (wall seconds `s`, CPU seconds
`cpu_time`); the Snakemake log of the run (the newest under .snakemake/log/, or --log) gives the DAG's wall time,
from its first job's start to its last job's end. The floor, max(sum of job seconds / cores, longest job), is a
bound no scheduler beats on `cores` cores without making the jobs themselves faster, so `measured / floor` is what
scheduling and the gaps between jobs cost, and `floor + set-up` against a budget says whether a budget can be met
by scheduling at all. Job seconds include each job's process start-up (imports), which the JSON shows per stage as
the shortest job of the stage.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.host import cpu_isa  # noqa: E402

# Snakemake stamps each job's start and end as "[Mon Dec  7 21:32:28 2026]".
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


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


def dag_wall_seconds(log: Path) -> tuple[float, int]:
    """Seconds from the first job's start stamp to the last stamp, and the number of finished jobs."""
    lines = log.read_text().splitlines()
    stamps = [datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
              for match in map(STAMP.match, lines) if match]
    if len(stamps) < 2:
        raise SystemExit(f"{log} has no job stamps: is it a Snakemake log of a run (not a dry run)?")
    return (stamps[-1] - stamps[0]).total_seconds(), sum(line.startswith("Finished jobid") for line in lines)


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
    measured, finished = dag_wall_seconds(log)
    every_job = [seconds for jobs in stages.values() for seconds in jobs.values()]
    total = sum(every_job)
    floor = max(total / args.cores, max(every_job))
    report = {
        "benchmark": "dag_time", "results": str(args.results), "log": str(log), "cores": args.cores,
        "cpu": cpu_isa(), "load_at_start_1min": args.load,
        "jobs_finished": finished, "jobs_timed": len(every_job),
        "stages": {stage: {"jobs": len(jobs), "seconds": round(sum(jobs.values()), 2),
                           "share": round(sum(jobs.values()) / total, 4),
                           "shortest_job_s": round(min(jobs.values()), 2), "longest_job_s": round(max(jobs.values()), 2)}
                   for stage, jobs in sorted(stages.items(), key=lambda item: -sum(item[1].values()))},
        "job_seconds_total": round(total, 2),
        "floor_s": round(floor, 2), "measured_s": measured, "measured_over_floor": round(measured / floor, 3),
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
