"""The published-number registry: every shipped row validates, and bad rows fail with file + row named."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from pixeldit.report.published import (
    METRIC_KEYS,
    PUBLISHED_DIR,
    PublishedRegistryError,
    load_published,
    load_registry_file,
)

REQUIRED_METHODS = {
    "imagenet-256": ["DiT-XL/2", "SiT-XL/2", "REPA (SiT-XL/2)", "RAE (DiT^DH-XL)", "DDT-XL/2", "ADM-G", "SiD2 (UViT/1, flop heavy)",
                     "VDM++ (U-ViT)", "PixelFlow-XL/4", "PixNerd-XL/16", "DeCo-XL/16", "JiT-H/16", "DiP-XL/16",
                     "EPG-XL", "PixelGen-XL/16", "PixelDiT-XL"],
    "imagenet-512": ["PixelDiT-XL (320 ep @256 + 530 ep @512)", "DiT-XL/2", "DeCo-XL/16"],
    "t2i-512": ["PixArt-Σ", "SD3", "PixNerd-XXL/16", "PixelFlow", "PixelDiT-T2I"],
    "t2i-1024": ["SDXL", "FLUX-dev", "DALL·E 3", "PixelDiT-T2I"],
}


def test_every_shipped_row_is_sourced_and_numeric():
    rows = load_published()
    assert {path.name for path in PUBLISHED_DIR.glob("*.yaml")} == {"imagenet256.yaml", "imagenet512.yaml",
                                                                  "imagenet512-edm2.yaml", "t2i.yaml"}
    for row in rows:
        assert row.source.strip(), row
        assert row.values and set(row.values) <= set(METRIC_KEYS), row
        assert all(isinstance(value, float) and math.isfinite(value) for value in row.values.values()), row
        assert row.type in ("latent", "pixel")
        assert row.registry.endswith("v1")


def test_required_methods_present():
    for setting, methods in REQUIRED_METHODS.items():
        present = {row.method for row in load_published(setting=setting)}
        assert set(methods) <= present, (setting, set(methods) - present)


def test_pixeldit_headline_numbers_match_the_reference():
    by_epochs = {row.epochs: row for row in load_published(setting="imagenet-256") if row.method == "PixelDiT-XL"}
    assert {epochs: row.values["fid"] for epochs, row in by_epochs.items() if epochs in (80, 160, 320)} == {
        80: 2.36, 160: 1.97, 320: 1.61}
    assert by_epochs[320].gflops.value == 311 and by_epochs[320].gflops.convention == "2flops_per_mac"
    assert by_epochs[80].confidence   # sFID/IS/P/R of the 80-epoch row are single-source
    (row_512,) = [row for row in load_published(setting="imagenet-512") if row.epochs == 850]
    assert row_512.values["fid"] == 1.81
    t2i_1024 = [row for row in load_published(setting="t2i-1024") if row.method == "PixelDiT-T2I"][0]
    assert t2i_1024.values == {"geneval": 0.74, "dpg": 83.5}


def test_edm2_fd_dinov2_rows_keep_one_preset_per_metric_and_fill_the_512_column(tmp_path):
    from pixeldit.report.collect import collect_results
    from pixeldit.report.tables import main_tables

    edm2 = {row.method: row for row in load_published(setting="imagenet-512") if row.method.startswith("EDM2-")}
    assert edm2["EDM2-XXL (preset edm2-img512-xxl-guid-dino)"].values == {"fd_dinov2": 33.09}
    assert edm2["EDM2-XXL (preset edm2-img512-xxl-guid-fid)"].values == {"fid": 1.81}
    # a preset's EMA and guidance minimise its one metric: no row carries both
    assert all(len(row.values) == 1 for row in edm2.values()) and len(edm2) == 12
    assert {row.card["evaluator"]["backend"] for row in edm2.values()} == {"edm2-calculate-metrics"}
    (table,) = [table for table in main_tables(collect_results(tmp_path), load_published()) if table.name == "main-imagenet-512"]
    column = table.columns.index("FD_DINOv2")
    by_label = {row[0].text: row[column].text for row in table.rows}
    assert by_label["EDM2-S (preset edm2-img512-s-guid-dino)"] == "52.32"
    assert by_label["EDM2-S (preset edm2-img512-s-guid-fid)"] == "—"
    (table_256,) = [table for table in main_tables(collect_results(tmp_path), load_published()) if table.name == "main-imagenet-256"]
    assert "FD_DINOv2" not in table_256.columns     # no 256 row has one


def test_mac_convention_is_doubled():
    (dit,) = [row for row in load_published(setting="imagenet-256") if row.method == "DiT-XL/2"]
    assert dit.gflops.convention == "mac" and dit.gflops.as_2flops_per_mac() == 238


def test_filters_reject_unknown_names():
    assert {row.type for row in load_published(setting="imagenet-256", model_type="latent")} == {"latent"}
    with pytest.raises(PublishedRegistryError, match="unknown setting 'imagenet-1024'.*imagenet-256"):
        load_published(setting="imagenet-1024")


def _write_registry(directory: Path, rows: list[dict]) -> Path:
    path = directory / "broken.yaml"
    path.write_text(yaml.safe_dump({"version": 3, "rows": rows}, allow_unicode=True))
    return path


GOOD_ROW = {"method": "Good-XL", "type": "pixel", "setting": "imagenet-256", "values": {"fid": 2.0},
            "source": "arXiv 0000.00000 Table 1"}


@pytest.mark.parametrize("bad_row, message", [
    ({**GOOD_ROW, "method": "Bad-XL", "values": {"fid": "2.27x"}}, r"broken\.yaml row 2 \(Bad-XL\): values\.fid must be a number"),
    ({**GOOD_ROW, "method": "Bad-XL", "values": {"fid": True}}, r"row 2 \(Bad-XL\): values\.fid must be a number"),
    ({key: value for key, value in GOOD_ROW.items() if key != "source"}, r"row 2 \(Good-XL\): missing required field\(s\) \['source'\]"),
    ({**GOOD_ROW, "values": {"fdi": 2.0}}, r"row 2 \(Good-XL\): unknown metric 'fdi'"),
    ({**GOOD_ROW, "sorce": "x"}, r"row 2 \(Good-XL\): unknown field\(s\) \['sorce'\]"),
    ({**GOOD_ROW, "type": "hybrid"}, r"row 2 \(Good-XL\): type 'hybrid'"),
    ({**GOOD_ROW, "gflops": {"value": 10, "convention": "flops"}}, r"row 2 \(Good-XL\): gflops\.convention 'flops'"),
    ({**GOOD_ROW, "epochs": "320"}, r"row 2 \(Good-XL\): field 'epochs' must be a number"),
    (GOOD_ROW, r"row 2 \(Good-XL\): duplicates row 1"),
])
def test_bad_row_error_names_file_and_row(tmp_path, bad_row, message):
    path = _write_registry(tmp_path, [GOOD_ROW, bad_row])
    with pytest.raises(PublishedRegistryError, match=message):
        load_registry_file(path)


def test_good_registry_file_loads_and_version_is_required(tmp_path):
    (row,) = load_registry_file(_write_registry(tmp_path, [GOOD_ROW]))
    assert row.registry == "broken.yaml v3" and row.values == {"fid": 2.0}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({"rows": [GOOD_ROW]}))
    with pytest.raises(PublishedRegistryError, match="broken.yaml: top-level 'version' must be an integer"):
        load_registry_file(tmp_path / "broken.yaml")
