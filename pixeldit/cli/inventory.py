"""What is under a results folder: runs with their snapshots and progress, sample sets, result files."""
from __future__ import annotations

import json
from pathlib import Path

from pixeldit.infra.progress import duration
from pixeldit.infra.runs import latest_state


def _last_stats(run_dir: Path) -> dict:
    """The newest stats.jsonl record: how far the run trained and how fast it went."""
    path = run_dir / "stats.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    try:
        return json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:    # a line cut by a kill; the run rewrites it on resume
        return {}


def list_runs(results: Path) -> list[dict]:
    """Per run: how far it trained, what is left (with the time at its last speed), its snapshots."""
    rows = []
    for run_dir in sorted((results / "runs").glob("*/")):
        config_file = run_dir / "config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        snapshots = sorted(run_dir.glob("network-snapshot-*.safetensors"))
        state = latest_state(run_dir)
        total = config.get("total_kimg")
        state_kimg = int(state.stem.rsplit("-", 1)[1]) if state else 0
        done = total is not None and bool(snapshots) and snapshots[-1].name.endswith(f"{total:07d}.safetensors")
        status = "done" if done else f"resumable from {state_kimg} kimg" if state else "not started"
        stats = _last_stats(run_dir)
        trained = float(total) if done else stats.get("kimg", float(state_kimg))
        if total is None:
            progress, left = f"{trained:g}/? kimg", "?"
        else:
            progress = f"{trained:.1f}/{total} kimg ({100 * trained / total:.0f}%)" if total else f"{trained:g}/0 kimg"
            rate = stats.get("images_per_second")
            remaining = max(total - state_kimg, 0)   # a rerun continues from the state
            left = ("-" if done else f"{remaining:g} kimg" + (f" (~{duration(remaining * 1000 / rate)} at "
                                                              f"{rate:.0f} img/s)" if rate else ""))
        rows.append({"run": run_dir.name, "model": config.get("model", "?"), "ablation": config.get("ablation"),
                     "progress": progress, "left": left, "status": status,
                     "snapshots": [int(p.stem.rsplit("-", 1)[1]) for p in snapshots]})
    return rows


def list_samples(results: Path) -> list[dict]:
    """Every sample set: a folder with shards or a merged samples.json, at any depth (a seed range's
    `range-<r>/` sits one level below its sampler folder)."""
    rows = []
    root = results / "samples"
    found = [*root.rglob("shard-*.npz"), *root.rglob("samples.json"), *root.rglob("samples.npz")]
    for directory in sorted({p.parent for p in found}):
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
