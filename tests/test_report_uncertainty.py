"""The report with FID bootstrap blocks: `value ± std` cells, `≈` marks on overlapping intervals, FID(N) plots."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pixeldit.report.build import build_report

FIXTURE_RESULTS = Path(__file__).parent / "fixtures" / "report" / "results"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# result -> (std, 2.5 %, 97.5 %): cfg1.5 overlaps cfg3.0, cfg3.0 overlaps the latent run; vanilla overlaps none
INTERVALS = {"pixeldit-s4-0/0000512/euler-50-cfg1.5": (1.0, 28.6, 32.6),
             "pixeldit-s4-0/0000512/euler-50-cfg3.0": (1.0, 31.9, 35.7),
             "pixeldit-s4-0/0000256/euler-50-cfg1.5": (1.25, 39.0, 43.9),
             "latent-s2-0/0000512/euler-50-cfg1.5": (1.0, 34.0, 38.0),
             "vanilla-s4-0/0000512/euler-50-cfg1.5": (0.9, 46.0, 49.5)}


def _with_bootstrap(path: Path, std: float, low: float, high: float) -> None:
    record = json.loads(path.read_text())
    fid = record["values"]["fid"]
    record.setdefault("extra", {}).update(
        fid_bootstrap={"mean": fid + 0.5, "std": std, "p2.5": low, "p97.5": high, "resamples": 1000, "seed": 0,
                       "count": 200, "resampled": "samples only", "method": "gram"},
        fid_vs_n={"n": [50, 100, 200], "fid": [fid + 9.0, fid + 4.0, fid], "seed": 0})
    path.write_text(json.dumps(record))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results = tmp_path_factory.mktemp("uncertainty") / "results"
    shutil.copytree(FIXTURE_RESULTS, results)
    for result, interval in INTERVALS.items():
        _with_bootstrap(results / "metrics" / result / "imagenet.json", *interval)
    return build_report(results)


def _table(plan, name):
    return next(table for table in plan.tables if table.name == name)


def test_tables_show_fid_plus_minus_std_and_mark_overlaps(report):
    table = _table(report, "main-digits-32")
    fid = table.columns.index("FID")
    cells = {row[0].text: row[fid] for row in table.rows}
    full, guided = cells["full PixelDiT (pixeldit-s4-0, 512 kimg, euler-50-cfg1.5)"], \
        cells["full PixelDiT (pixeldit-s4-0, 512 kimg, euler-50-cfg3.0)"]
    latent, vanilla = cells["DiT-S/2-latent (latent-s2-0, 512 kimg, euler-50-cfg1.5)"], \
        cells["vanilla DiT/4 (vanilla-s4-0, 512 kimg, euler-50-cfg1.5)"]
    assert (full.text, full.value) == ("30.50 ± 1.00", 30.5) and vanilla.text == "47.75 ± 0.90"
    assert all("≈" in cell.marks for cell in (full, guided, latent)) and "≈" not in vanilla.marks
    note = table.notes["≈"]
    assert "euler-50-cfg1.5) and full PixelDiT (pixeldit-s4-0, 512 kimg, euler-50-cfg3.0)" in note
    assert "DiT-S/2-latent (latent-s2-0, 512 kimg, euler-50-cfg1.5)" in note and note.count(" and ") == 2   # two overlapping pairs
    assert any("1000 bootstrap resamples" in text for text in table.notes.values())

    markdown = (report.out_dir / "tables" / "main-digits-32.md").read_text()
    assert "30.50 ± 1.00<sup>" in markdown and "<sup>≈</sup>" in markdown
    assert r"$\approx$" in (report.out_dir / "tables" / "main-digits-32.tex").read_text()
    csv = (report.out_dir / "tables" / "main-digits-32.csv").read_text()
    assert ",30.5," in csv and "FID 95% bootstrap intervals overlap" in csv           # raw value, marks as notes

    ablation = _table(report, "ablation-ladder")   # at 512 kimg: cfg1.5 and cfg3.0 overlap, vanilla not
    marked = [row[ablation.columns.index("FID")].marks for row in ablation.rows]
    assert sum("≈" in marks for marks in marked) == 2


def test_html_shows_interval_and_fid_vs_n_plots(report):
    names = {job.name for job in report.plots}
    assert {"fid_vs_n-pixeldit-s4-0", "fid_vs_n-latent-s2-0", "fid_vs_n-vanilla-s4-0"} <= names
    assert "fid_vs_n-pixeldit-xl-official" not in names                # its result has no fid_vs_n
    png = report.out_dir / "plots" / "fid_vs_n-pixeldit-s4-0.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE and (png.with_suffix(".svg")).stat().st_size > 0
    page = (report.out_dir / "index.html").read_text()
    assert "30.50 ± 1.00" in page and "30.50 ± 1.00 ±" not in page
    assert 'src="plots/fid_vs_n-pixeldit-s4-0.png"' in page
    assert "bootstrap over the samples: ± 1, 95% [28.6, 32.6], 1000 resamples, seed 0" in page
    assert "(plots/fid_vs_n-pixeldit-s4-0.png)" in (report.out_dir / "report.md").read_text()
