"""Report figures (PNG + SVG) drawn with matplotlib's object API on the Agg canvas (no pyplot state).

`plan_plots` looks at the data first and returns, for every figure, either a `PlotJob` (ready to
draw) or a `Skipped` with the reason, so missing inputs never crash a report and `--dry-run` can
list what would be drawn without drawing it.

Per run whose ImageNet results record `extra.fid_vs_n`: `fid_vs_n-<run>`, FID of nested first-N subsets of the
samples against N, one line per snapshot and sampler, with the bootstrap's 95% interval at the full count where
the result has one. Runs without it simply get no such figure.
"""
from __future__ import annotations

import json
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from pixeldit.report.published import PublishedRow
from pixeldit.report.render import file_stem
from pixeldit.report.tables import IMAGENET_EVALUATOR, setting_title

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

GRID_IMAGES = 64
_PUBLISHED_MARKERS = {"latent": "s", "pixel": "o"}


@dataclass(frozen=True)
class PlotJob:
    name: str                                # file stem: plots/<name>.{png,svg}
    title: str
    draw: Callable[[Figure], None]


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


def write_plot(job: PlotJob, directory: Path) -> list[Path]:
    """Draw `job` once and save it as PNG and SVG under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    from matplotlib.figure import Figure  # lazy: matplotlib costs ~0.6 s of every command's start-up otherwise

    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    job.draw(figure)
    paths = [directory / f"{job.name}.{extension}" for extension in ("png", "svg")]
    for path in paths:
        figure.savefig(path, dpi=150)
    return paths


def _series_label(run: str, variant: str | None, sampler: str) -> str:
    return f"{variant or run} · {sampler}"


# ------------------------------------------------------------------------------- metric figures

def _fid_results(frame: pd.DataFrame) -> pd.DataFrame:
    """ImageNet-protocol results that carry an FID value."""
    if "fid" not in frame.columns:
        return frame.iloc[0:0]
    return frame[(frame["evaluator"] == IMAGENET_EVALUATOR) & frame["fid"].notna()]


def _fid_curves(rows: pd.DataFrame, setting: str, x: str, xlabel: str, name: str, title: str) -> PlotJob:
    """FID against column `x` (training progress), one line per run and sampler."""
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        for (run, sampler), series in rows.groupby(["run", "sampler"], sort=False):
            series = series.sort_values(x)
            variant = series["variant"].dropna().iloc[0] if series["variant"].notna().any() else None
            axes.plot(series[x].astype(float), series["fid"].astype(float), marker="o",
                      label=_series_label(run, variant, sampler))
        axes.set(xlabel=xlabel, ylabel="FID", title=f"{title} on {setting_title(setting)}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return PlotJob(f"{name}-{file_stem(setting)}", f"{title}, {setting_title(setting)}", draw)


def _fid_vs_kimg(rows: pd.DataFrame, setting: str) -> PlotJob:
    return _fid_curves(rows, setting, "kimg", "training images seen (kimg)", "fid_vs_kimg", "FID vs training")


def _fid_vs_training_compute(rows: pd.DataFrame, setting: str) -> PlotJob:
    """Pixel and latent models on one compute axis: the matched-compute comparison of the latent baselines."""
    return _fid_curves(rows, setting, "train_pflops",
                       "training compute (PFLOPs: 3 x forward FLOPs x images, 2 FLOPs per MAC)",
                       "fid_vs_training_compute", "FID vs training compute")


def _fid_vs_guidance(rows: pd.DataFrame, setting: str) -> PlotJob:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        for (run, kimg), series in rows.groupby(["run", "kimg"], sort=False):
            series = series.sort_values("guidance")
            axes.plot(series["guidance"].astype(float), series["fid"].astype(float), marker="o",
                      label=f"{run} @ {kimg} kimg")
        axes.set(xlabel="guidance scale", ylabel="FID", title=f"FID vs guidance on {setting_title(setting)}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return PlotJob(f"fid_vs_guidance-{file_stem(setting)}", f"FID vs guidance scale, {setting_title(setting)}", draw)


def _fid_vs_gflops(measured: pd.DataFrame, published: Sequence[PublishedRow], setting: str) -> PlotJob:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        repeated = {row.method for row in published if sum(other.method == row.method for other in published) > 1}
        for model_type, marker in _PUBLISHED_MARKERS.items():
            points = [(row.gflops.as_2flops_per_mac(), row.values["fid"],
                       f"{row.method}, {row.epochs:g} ep" if row.method in repeated and row.epochs else row.method)
                      for row in published if row.type == model_type]
            if points:
                xs, ys, names = zip(*points)
                axes.scatter(xs, ys, marker=marker, facecolors="none", edgecolors="tab:gray",
                             label=f"published ({model_type})")
                for x, y, name in points:
                    axes.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if not measured.empty:
            axes.scatter(measured["gflops"].astype(float), measured["fid"].astype(float), marker="*", s=120,
                         color="tab:red", label="measured", zorder=3)
            for _, row in measured.iterrows():
                axes.annotate(row["variant"] if isinstance(row["variant"], str) else row["run"],
                              (row["gflops"], row["fid"]), fontsize=6, xytext=(3, -8), textcoords="offset points")
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # lazy: as in write_plot

        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))   # 100, 200, 300, 500, ... as plain numbers
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set(xlabel="GFLOPs per forward pass (2 FLOPs per MAC, log scale)", ylabel="FID",
                 title=f"Efficiency on {setting_title(setting)}")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize="small")
    return PlotJob(f"fid_vs_gflops-{file_stem(setting)}", f"FID vs GFLOPs, {setting_title(setting)}", draw)


def _fid_vs_n(run: str, rows: pd.DataFrame, setting: str) -> PlotJob:
    """FID(N) of one run: one line per (kimg, sampler), the bootstrap interval as an error bar at the full N."""
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        for _, row in rows.sort_values(["kimg", "sampler"]).iterrows():
            curve = row["fid_vs_n"]
            kimg = "" if pd.isna(row["kimg"]) else f"{int(row['kimg'])} kimg · "
            line, = axes.plot(curve["n"], curve["fid"], marker="o", label=f"{kimg}{row['sampler']}")
            boot = row.get("fid_bootstrap")
            if isinstance(boot, dict):
                full, fid = curve["n"][-1], curve["fid"][-1]
                axes.errorbar([full], [fid], yerr=[[max(fid - boot["p2.5"], 0)], [max(boot["p97.5"] - fid, 0)]],
                              color=line.get_color(), capsize=4, linewidth=1)
        axes.set_xscale("log", base=2)
        from matplotlib.ticker import FuncFormatter  # lazy: as in write_plot

        axes.set_xticks(sorted({size for curve in rows["fid_vs_n"] for size in curve["n"]}))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
        axes.set(xlabel="samples N (first N of a seeded permutation, log scale)", ylabel="FID",
                 title=f"FID(N) of {run} on {setting_title(setting)}")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize="small", title="bar: bootstrap 95% interval", title_fontsize="x-small")
    return PlotJob(f"fid_vs_n-{file_stem(run)}", f"FID vs sample count, {run} ({setting_title(setting)})", draw)


def _plan_fid_vs_n(fid: pd.DataFrame) -> list[PlotJob]:
    if "fid_vs_n" not in fid.columns or fid.empty:
        return []
    rows = fid[fid["fid_vs_n"].map(lambda curve: isinstance(curve, dict)).astype(bool)]
    return [_fid_vs_n(run, series, series["setting"].iloc[0]) for run, series in rows.groupby("run", sort=False)]


def _plan_metric_plots(frame: pd.DataFrame, published: Sequence[PublishedRow]) -> list[PlotJob | Skipped]:
    fid = _fid_results(frame)
    plans: list[PlotJob | Skipped] = []

    kimg_rows = fid[fid["kimg"].notna()]
    plans += [_fid_vs_kimg(rows, setting) for setting, rows in kimg_rows.groupby("setting", sort=False)] or [
        Skipped("fid_vs_kimg", "no ImageNet-protocol result with both an FID value and a kimg")]

    compute_rows = fid[fid["train_pflops"].notna()]
    plans += [_fid_vs_training_compute(rows, setting)
              for setting, rows in compute_rows.groupby("setting", sort=False)] or [
        Skipped("fid_vs_training_compute", "no FID result records its training compute (model.train_pflops)")]

    guidance_rows = fid[fid["guidance"].notna()]
    swept = guidance_rows.groupby(["run", "kimg"], dropna=False)["guidance"].transform("nunique") >= 2
    plans += [_fid_vs_guidance(rows, setting)
              for setting, rows in guidance_rows[swept].groupby("setting", sort=False)] or [
        Skipped("fid_vs_guidance", "no run snapshot was evaluated at two or more guidance scales")]

    # Only numbers in one FLOP convention can share an axis: MACs are doubled, unknown ones left out.
    comparable = [row for row in published
                  if "fid" in row.values and row.gflops and row.gflops.as_2flops_per_mac() is not None]
    left_out = sorted({row.method for row in published if "fid" in row.values and row.gflops
                       and row.gflops.as_2flops_per_mac() is None})
    if left_out:
        log.info("fid_vs_gflops: left out published points with an unknown FLOP convention: %s", ", ".join(left_out))
    measured = fid[fid["gflops"].notna() & (fid["gflops_convention"] != "unknown")]
    measured = measured.assign(gflops=[value * (2 if convention == "mac" else 1)
                                       for value, convention in zip(measured["gflops"], measured["gflops_convention"])])
    settings = dict.fromkeys([row.setting for row in comparable] + list(measured["setting"]))
    plans += [_fid_vs_gflops(measured[measured["setting"] == setting],
                             [row for row in comparable if row.setting == setting], setting)
              for setting in settings] or [
        Skipped("fid_vs_gflops", "no FID result (measured or published) with GFLOPs in a known FLOP convention")]
    plans += _plan_fid_vs_n(fid)
    return plans


# ------------------------------------------------------------------------------ run-dir figures

def read_stats(path: Path) -> pd.DataFrame:
    """`kimg` and `loss` from a stats.jsonl; unreadable lines (e.g. a half-written last line) are skipped."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not JSON; skipped", path, number)
            continue
        if isinstance(entry, dict) and isinstance(entry.get("kimg"), (int, float)) and isinstance(
                entry.get("loss"), (int, float)):
            records.append({"kimg": float(entry["kimg"]), "loss": float(entry["loss"])})
    return pd.DataFrame(records, columns=["kimg", "loss"])


def _loss_curves(curves: dict[str, pd.DataFrame]) -> PlotJob:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        for run, stats in curves.items():
            axes.plot(stats["kimg"], stats["loss"], label=run, linewidth=1)
        if all((stats["loss"] > 0).all() for stats in curves.values()):
            axes.set_yscale("log")
        axes.set(xlabel="training images seen (kimg)", ylabel="training loss", title="Training loss")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize="small")
    return PlotJob("loss_curves", "Training loss per run", draw)


def read_leading_images(npz_path: Path, count: int = GRID_IMAGES) -> np.ndarray:
    """The first `count` images of `arr_0` (uint8 NHWC) without loading the other 50k into memory."""
    with zipfile.ZipFile(npz_path) as archive, archive.open("arr_0.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(member)
        if fortran_order or dtype != np.uint8 or len(shape) != 4 or shape[-1] not in (1, 3):
            raise ValueError(f"{npz_path}: arr_0 must be C-ordered uint8 NHWC with 1 or 3 channels, "
                             f"got shape {shape}, dtype {dtype}, fortran_order={fortran_order}")
        count = min(count, shape[0])
        image_bytes = math.prod(shape[1:])
        return np.frombuffer(member.read(count * image_bytes), dtype=np.uint8).reshape(count, *shape[1:])


def image_grid(images: np.ndarray) -> np.ndarray:
    """Tile N HWC images into one near-square grid, padding with black."""
    count, height, width, channels = images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * height, columns * width, channels), dtype=np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    return grid


def _sample_grid(run: str, images: np.ndarray, label: str) -> PlotJob:
    def draw(figure: Figure) -> None:
        grid = image_grid(images)
        axes = figure.add_subplot()
        axes.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray" if grid.shape[-1] == 1 else None,
                    interpolation="nearest")
        axes.set_axis_off()
        axes.set_title(f"first {len(images)} samples of {label}", fontsize="small")
    return PlotJob(f"samples-{file_stem(run)}", f"Samples: {label}", draw)


def _latest_samples(run_dir: Path) -> Path | None:
    """samples/<run>/<kimg>/<sampler>/samples.npz at the largest kimg (first sampler by name)."""
    candidates = [path for path in run_dir.glob("*/*/samples.npz") if path.parent.parent.name.isdigit()]
    if not candidates:
        return None
    return min(candidates, key=lambda path: (-int(path.parent.parent.name), path.parent.name))


def _plan_run_plots(results_dir: Path, frame: pd.DataFrame) -> list[PlotJob | Skipped]:
    # Run dirs do not say which dataset they trained on; their result JSONs do.
    datasets = {run: setting_title(setting) for run, setting in zip(frame["run"], frame["setting"])}

    def labelled(run: str) -> str:
        return f"{run} ({datasets[run]})" if run in datasets else run

    plans: list[PlotJob | Skipped] = []
    curves = {labelled(path.parent.name): read_stats(path)
              for path in sorted((results_dir / "runs").glob("*/stats.jsonl"))}
    curves = {run: stats for run, stats in curves.items() if not stats.empty}
    plans.append(_loss_curves(curves) if curves else Skipped(
        "loss_curves", f"no runs/<run>/stats.jsonl with kimg and loss entries under {results_dir}"))

    run_dirs = sorted(path for path in (results_dir / "samples").glob("*") if path.is_dir())
    if not run_dirs:
        plans.append(Skipped("samples", f"no samples/<run>/<kimg>/<sampler>/samples.npz under {results_dir}"))
    for run_dir in run_dirs:
        name = f"samples-{file_stem(run_dir.name)}"
        npz = _latest_samples(run_dir)
        if npz is None:
            plans.append(Skipped(name, f"{run_dir} holds no <kimg>/<sampler>/samples.npz"))
            continue
        try:   # read now (64 images are cheap) so a broken file becomes a skip reason, not a crash later
            images = read_leading_images(npz)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            plans.append(Skipped(name, f"cannot read {npz}: {error}"))
            continue
        plans.append(_sample_grid(run_dir.name, images, f"{labelled(run_dir.name)}, {int(npz.parent.parent.name)} "
                                                        f"kimg, {npz.parent.name}"))
    return plans


def plan_plots(frame: pd.DataFrame, published: Sequence[PublishedRow], results_dir: Path) -> list[PlotJob | Skipped]:
    """Every figure of the report, each either ready to draw or skipped with its reason."""
    plans = _plan_metric_plots(frame, published) + _plan_run_plots(Path(results_dir), frame)
    for plan in plans:
        if isinstance(plan, Skipped):
            log.info("plot %s skipped: %s", plan.name, plan.reason)
    return plans
