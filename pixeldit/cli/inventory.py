"""What is under a results folder: runs with their snapshots and progress, sample sets, result files."""
from __future__ import annotations

import json
from pathlib import Path

from pixeldit.infra.runs import latest_state


def list_runs(results: Path) -> list[dict]:
    rows = []
    for run_dir in sorted((results / "runs").glob("*/")):
        config_file = run_dir / "config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        snapshots = sorted(run_dir.glob("network-snapshot-*.safetensors"))
        state = latest_state(run_dir)
        total = config.get("total_kimg")
        last_kimg = int(state.stem.rsplit("-", 1)[1]) if state else 0
        status = "done" if total is not None and snapshots and snapshots[-1].name.endswith(f"{total:07d}.safetensors") \
            else "resumable" if state else "not started"
        rows.append({"run": run_dir.name, "model": config.get("model", "?"), "ablation": config.get("ablation"),
                     "kimg": f"{last_kimg}/{total if total is not None else '?'}", "status": status,
                     "snapshots": [int(p.stem.rsplit("-", 1)[1]) for p in snapshots]})
    return rows


def list_samples(results: Path) -> list[dict]:
    rows = []
    for directory in sorted({p.parent for p in (results / "samples").glob("*/*/*/*") if p.suffix in (".npz", ".json")}):
        card = directory / "samples.json"
        shards = len(list(directory.glob("shard-*.npz")))
        count = json.loads(card.read_text())["count"] if card.exists() else None
        rows.append({"samples": str(directory.relative_to(results / "samples")), "shards": shards,
                     "status": f"merged ({count})" if count is not None else "partial"})
    return rows


def list_results(results: Path) -> list[dict]:
    rows = []
    for path in sorted((results / "metrics").glob("**/*.json")):
        try:
            record = json.loads(path.read_text())
            values = {k: v for k, v in record.get("values", {}).items() if isinstance(v, (int, float))}
            status = ", ".join(f"{k}={v:.4g}" for k, v in list(values.items())[:4])
        except (json.JSONDecodeError, AttributeError):
            status = "unreadable"
        rows.append({"result": str(path.relative_to(results / "metrics")), "values": status})
    return rows
