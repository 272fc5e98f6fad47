"""Tables from fixture result JSONs: contents of the Markdown, LaTeX and CSV renderings, n/a, protocol mixing."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from pixeldit.report.collect import collect_results
from pixeldit.report.published import load_published
from pixeldit.report.render import to_csv, to_latex, to_markdown
from pixeldit.report.tables import MixedProtocolError, ablation_tables, main_tables, t2i_table

FIXTURE_RESULTS = Path(__file__).parent / "fixtures" / "report" / "results"


@pytest.fixture(scope="module")
def frame():
    return collect_results(FIXTURE_RESULTS)


@pytest.fixture(scope="module")
def published():
    return load_published()


def _csv_rows(text: str) -> list[dict[str, str]]:
    caption, _, body = text.partition("\n")
    assert caption.startswith("# ")
    return list(csv.DictReader(io.StringIO(body)))


def _tables(frame, published, **kwargs):
    return {table.name: table for table in main_tables(frame, published, **kwargs)}


def test_collect_reads_identity_and_values(frame):
    assert len(frame) == 9
    row = frame[(frame["run"] == "pixeldit-s4-0") & (frame["kimg"] == 256)].iloc[0]
    assert (row["sampler"], row["evaluator"], row["setting"], row["group"]) == (
        "euler-50-cfg1.5", "imagenet", "digits-32", "ladder")
    assert row["fid"] == 41.25 and row["guidance"] == 1.5 and row["nfe"] == "50×2"
    assert "weights not installed" in row["unavailable"]["is"]
    digits = frame[(frame["evaluator"] == "imagenet") & (frame["setting"] == "digits-32")]
    assert len(digits) == 6 and digits["protocol_key"].nunique() == 1


def test_collect_reads_dataset_off_the_reference_file(frame):
    (row,) = frame[frame["run"] == "pixeldit-xl-official"].itertuples()
    assert (row.setting, row.kimg, row.sampler) == ("imagenet-256", 409973, "ab2-100-cfg2.75")


def test_main_tables_one_per_setting_with_dataset_in_caption(frame, published):
    tables = _tables(frame, published)
    assert list(tables) == ["main-imagenet-256", "main-imagenet-512", "main-digits-32"]
    assert "ImageNet 256×256" in tables["main-imagenet-256"].caption
    assert "digits 32×32" in tables["main-digits-32"].caption
    assert "ImageNet 256" in to_latex(tables["main-imagenet-256"]).split(r"\caption{")[1].split("}\n")[0]


def test_main_table_markdown_has_published_and_measured_rows(frame, published):
    tables = _tables(frame, published)
    markdown = to_markdown(tables["main-imagenet-256"])
    assert "**Class-conditional generation on ImageNet 256×256" in markdown
    rows_320 = [line for line in markdown.splitlines() if line.startswith("| PixelDiT-XL") and "| 320 |" in line]
    published_320, measured_320 = rows_320   # published rows first, the measured run below them
    assert "| published |" in published_320 and "| 1.61 | 4.68 | 292.7 | 0.78 | 0.64 |" in published_320
    assert "| 311 |" in published_320
    assert measured_320.startswith("| PixelDiT-XL/16 (pixeldit-xl-official, 409973 kimg, ab2-100-cfg2.75) |")
    assert "| measured |" in measured_320 and "| 797M | 311 | 320 | 100×2 | 1.65 | 4.71 | 290.1 | 0.79 | 0.63 |" in measured_320
    dit = next(line for line in markdown.splitlines() if line.startswith("| DiT-XL/2"))
    assert "| 238<sup>" in dit    # 119 MACs shown as 238 in 2-FLOPs-per-MAC, with a footnote
    assert "doubled to 2 FLOPs per MAC" in markdown

    digits = to_markdown(tables["main-digits-32"])
    measured = [line for line in digits.splitlines() if "| measured |" in line]
    assert len(measured) == 4   # latest snapshot (512 kimg) of 3 runs, 2 guidance scales for one
    assert all("512 kimg" in line for line in measured)
    assert "| 30.50 | 20.31 | n/a<sup>" in digits


def test_unavailable_renders_as_na_with_footnote_never_zero(frame, published):
    table = _tables(frame, published)["main-digits-32"]
    markdown, latex, csv_text = to_markdown(table), to_latex(table), to_csv(table)
    is_column = table.columns.index("IS")
    assert {row[is_column].text for row in table.rows} == {"n/a"}
    mark = table.rows[0][is_column].marks[0]
    assert f"<sup>{mark}</sup> n/a = not computed: weights not installed" in markdown
    assert rf"n/a\textsuperscript{{{mark}}}" in latex
    rows = _csv_rows(csv_text)
    assert {row["IS"] for row in rows} == {"n/a"}
    assert all("weights not installed" in row["notes"] for row in rows)
    assert not any(row["IS"] in ("0", "0.0") for row in rows)


def test_latex_is_booktabs_and_escaped(frame, published):
    latex = to_latex(_tables(frame, published)["main-imagenet-256"])
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{llllrrlrrrrrl}", r"\label{tab:main-imagenet-256}"):
        assert command in latex
    assert r"250$\times$2" in latex and r"RAE (DiT\textasciicircum{}DH-XL)" in latex
    assert "×" not in latex.split(r"\begin{tabular}")[1].split(r"\end{tabular}")[0]


def test_csv_keeps_raw_values_and_origin(frame, published):
    rows = _csv_rows(to_csv(_tables(frame, published)["main-imagenet-256"]))
    assert [row["Origin"] for row in rows].count("measured") == 1 and len(rows) > 20
    measured = next(row for row in rows if row["Origin"] == "measured")
    assert float(measured["FID"]) == 1.65 and measured["Source"].endswith("ab2-100-cfg2.75/imagenet.json")
    pixeldit = next(row for row in rows if row["Model"] == "PixelDiT-XL" and row["Epochs"] == "320")
    assert float(pixeldit["FID"]) == 1.61 and "NVlabs/PixelDiT" in pixeldit["Source"]
    assert "single secondary source" in pixeldit["notes"]
    digits = _csv_rows(to_csv(_tables(frame, published)["main-digits-32"]))
    assert {row["Origin"] for row in digits} == {"measured"}
    assert float(next(row for row in digits if row["Model"].startswith("full PixelDiT"))["FID"]) == 30.5


def test_ablation_table_compares_variants_at_common_budget(frame):
    (table,) = ablation_tables(frame)
    assert table.name == "ablation-ladder" and "every variant at 512 kimg" in table.caption
    assert "digits 32×32" in table.caption
    variants = [row[0].text for row in table.rows]
    assert variants == ["full PixelDiT", "full PixelDiT", "vanilla DiT/4"]
    fid = table.columns.index("FID")
    assert [row[fid].value for row in table.rows] == [30.5, 33.75, 47.75]
    assert "latent-s2-0" not in to_markdown(table)   # not in the group


def test_t2i_table_joins_geneval_and_dpg(frame, published):
    table = t2i_table(frame, published)
    rows = _csv_rows(to_csv(table))
    measured = next(row for row in rows if row["Origin"] == "measured")
    assert float(measured["GenEval Overall"]) == 0.15625
    assert measured["GenEval Position"] == "n/a" and "no image of this task was scored" in measured["notes"]
    assert float(measured["DPG Overall"]) == 33.5 and float(measured["DPG Entity"]) == 40.5   # reference mode
    assert measured["DPG Other"] == ""   # the evaluator reported no such category: empty, not n/a or 0
    pixeldit_1024 = next(row for row in rows if row["Model"] == "PixelDiT-T2I" and row["Res."] == "1024")
    assert (pixeldit_1024["GenEval Overall"], pixeldit_1024["DPG Overall"], pixeldit_1024["Origin"]) == (
        "0.74", "83.5", "published")
    assert pixeldit_1024["GenEval Single"] == ""   # not published per task: empty, not 0
    markdown = to_markdown(table)
    assert "GenEval" in table.caption and "DPG-Bench" in table.caption
    assert "| PixArt-Σ<sup>" in markdown and "| — |" in markdown


@pytest.fixture
def mixed_results(tmp_path):
    """The fixture tree with one run re-scored against a different reference set."""
    results = tmp_path / "results"
    shutil.copytree(FIXTURE_RESULTS, results)
    path = results / "metrics/vanilla-s4-0/0000512/euler-50-cfg1.5/imagenet.json"
    record = json.loads(path.read_text())
    record["protocol"]["reference"]["sha256"] = "d" * 64
    path.write_text(json.dumps(record))
    return results


def test_mixed_protocols_are_refused_naming_both_runs(mixed_results, published):
    frame = collect_results(mixed_results)
    with pytest.raises(MixedProtocolError) as error:
        main_tables(frame, published)
    message = str(error.value)
    assert "main-digits-32" in message and "vanilla-s4-0" in message
    assert "latent-s2-0" in message or "pixeldit-s4-0" in message
    assert "protocol.reference.sha256" in message and "--allow-mixed" in message
    with pytest.raises(MixedProtocolError, match="ablation-ladder"):
        ablation_tables(frame)


def test_mixed_protocols_are_marked_when_allowed(mixed_results, published):
    frame = collect_results(mixed_results)
    table = _tables(frame, published, allow_mixed=True)["main-digits-32"]
    markdown = to_markdown(table)
    vanilla = next(line for line in markdown.splitlines() if line.startswith("| vanilla DiT/4"))
    assert "<sup>imagenet-p2</sup>" in vanilla
    others = [line for line in markdown.splitlines() if "| measured |" in line and not line.startswith("| vanilla")]
    assert others and all("<sup>imagenet-p1</sup>" in line for line in others)
    assert "<sup>imagenet-p2</sup> imagenet protocol card" in markdown
    assert "differs from card" in markdown and "protocol.reference.sha256" in markdown
    assert r"\textsuperscript{imagenet-p2}" in to_latex(table)


def test_t2i_table_marks_corrected_mode_dpg(tmp_path, published):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE_RESULTS, results)
    path = results / "metrics/t2i-tiny-0/0000128/dpm-25-cfg4.5/dpg.json"
    record = json.loads(path.read_text())
    record["values"] = {key: value for key, value in record["values"].items() if "reference" not in key}
    path.write_text(json.dumps(record))
    table = t2i_table(collect_results(results), published)
    measured = next(row for row in _csv_rows(to_csv(table)) if row["Origin"] == "measured")
    assert float(measured["DPG Overall"]) == 34.75 and float(measured["DPG Entity"]) == 41.0
    assert "'corrected' mode" in measured["notes"]


def test_fd_dinov2_is_its_own_column_only_where_results_have_it(tmp_path, frame, published):
    assert "FD_DINOv2" not in _tables(frame, published)["main-digits-32"].columns   # no result has it: unchanged
    results = tmp_path / "results"
    shutil.copytree(FIXTURE_RESULTS, results)
    scored = set()
    for number, path in enumerate(sorted(results.glob("metrics/*/*/*/imagenet.json"))):
        record = json.loads(path.read_text())
        if record["values"].get("fid") is None:
            continue
        record["values"]["fd_dinov2"] = 100.0 + number
        scored.add(100.0 + number)
        path.write_text(json.dumps(record))
    table = _tables(collect_results(results), published)["main-digits-32"]
    fid, fd = table.columns.index("FID"), table.columns.index("FD_DINOv2")
    assert fd == fid + len(("FID", "sFID", "IS", "Prec.", "Rec."))       # after ADM's columns, never in FID's
    values = [row[fd].value for row in table.rows if row[fd].value is not None]
    assert values and set(values) <= scored
    assert all(row[fid].value not in scored for row in table.rows)
    (ablation,) = ablation_tables(collect_results(results))
    assert "FD_DINOv2" in ablation.columns
