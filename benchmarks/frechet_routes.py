"""The Fréchet routes (ADM's sqrtm, the symmetric eigh, the n×n gram) on every ImageNet-suite result of a finished
run; writes JSON.

    python benchmarks/frechet_routes.py results --out results/bench/frechet_routes.json

For each `metrics/**/imagenet.json` (and `rfid` results) under RESULTS it rescores the recorded samples against
the recorded reference with FID and sFID by each route (features come from the evaluator's cache, so only the
distances are recomputed) and reports the values, each route's relative difference to sqrtm and the distance
time. A route may be the default only where every relative difference is within 1e-6. Run it in the folder the
workflow ran in: results record their samples and reference paths relative to it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluators.imagenet import evaluate_imagenet  # noqa: E402
from pixeldit.infra.files import write_json_atomic  # noqa: E402

ROUTES = ("sqrtm", "eigh", "gram")
TOLERANCE = 1e-6


def rescore(record_path: Path) -> dict:
    record = json.loads(record_path.read_text())
    samples, reference = record["samples"]["path"], record["extra"]["reference_path"]
    row = {"result": str(record_path), "samples": samples, "reference": reference}
    for route in ROUTES:
        started = time.perf_counter()
        scored = evaluate_imagenet(samples, reference, metrics=["fid", "sfid"], frechet=route)
        row[route] = {metric: scored["values"][metric] for metric in ("fid", "sfid")}
        row[f"{route}_seconds"] = round(time.perf_counter() - started, 2)
    row["relative_difference"] = {
        f"{route}_{metric}": abs(row[route][metric] - row["sqrtm"][metric]) / abs(row["sqrtm"][metric])
        for route in ROUTES[1:] for metric in ("fid", "sfid") if row["sqrtm"][metric] is not None}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results folder of a finished workflow run")
    parser.add_argument("--out", type=Path, default=Path("results/bench/frechet_routes.json"))
    args = parser.parse_args()
    paths = sorted(path for path in (args.results / "metrics").glob("**/*.json")
                   if json.loads(path.read_text()).get("evaluator", {}).get("name") == "imagenet")
    if not paths:
        raise SystemExit(f"no ImageNet-suite results under {args.results / 'metrics'}; run the workflow first")
    rows = [rescore(path) for path in paths]
    worst = max(value for row in rows for value in row["relative_difference"].values())
    report = {"benchmark": "frechet_routes", "results": str(args.results), "rows": rows,
              "max_relative_difference": worst, "tolerance": TOLERANCE, "within_tolerance": worst <= TOLERANCE}
    write_json_atomic(args.out, report)
    print(json.dumps({key: value for key, value in report.items() if key != "rows"}, indent=2))
    for row in rows:
        print(f"{row['result']}: fid sqrtm {row['sqrtm']['fid']:.9g}, eigh {row['eigh']['fid']:.9g}, "
              f"gram {row['gram']['fid']:.9g}, "
              f"rel {row['relative_difference']}")


if __name__ == "__main__":
    main()
