"""DPG image layout: 2x2 grid writer, tile cropping, folder check."""
import numpy as np
import pytest
from PIL import Image

from evaluators.dpg.layout import check_layout, crop_tiles, make_grid, write_grid


def solid_tiles(size=6):
    return [np.full((size, size, 3), value, np.uint8) for value in (10, 60, 110, 160)]


def test_grid_round_trips_through_png_in_tl_tr_bl_br_order(tmp_path):
    tiles = solid_tiles()
    tiles[0][0, 0] = (255, 0, 0)
    path = write_grid(tmp_path, "partiprompts3", tiles)
    assert path.name == "partiprompts3.png" and not list(tmp_path.glob(".*"))
    with Image.open(path) as image:
        assert image.size == (12, 12)
        cropped = [np.asarray(tile) for tile in crop_tiles(image, 6)]
    for tile, original in zip(cropped, tiles):
        np.testing.assert_array_equal(tile, original)


@pytest.mark.parametrize("tiles, match", [
    (solid_tiles()[:3], "exactly 4"),
    ([np.zeros((6, 6, 3), np.float32)] * 4, "uint8"),
    (solid_tiles()[:3] + [np.zeros((8, 8, 3), np.uint8)], "equally sized"),
    ([np.zeros((6, 8, 3), np.uint8)] * 4, "square"),
])
def test_grid_writer_rejects_bad_samples(tmp_path, tiles, match):
    with pytest.raises(ValueError, match=match):
        write_grid(tmp_path, "0", tiles)


def test_grid_writer_rejects_item_ids_that_cannot_be_file_stems(tmp_path):
    with pytest.raises(ValueError, match="item id"):
        write_grid(tmp_path, "a.b", solid_tiles())


def test_crop_refuses_a_grid_of_the_wrong_size():
    with pytest.raises(ValueError, match="expected 16x16"):
        crop_tiles(Image.new("RGB", (12, 12)), 8)


def test_check_layout_reports_missing_extra_wrong_size_and_unreadable(tmp_path):
    write_grid(tmp_path, "0", solid_tiles())
    write_grid(tmp_path, "1", solid_tiles())
    Image.fromarray(make_grid(solid_tiles(5))).save(tmp_path / "2.png")
    (tmp_path / "3.png").write_bytes(b"not a png")
    (tmp_path / "results.txt").write_text("x")
    write_grid(tmp_path, "99", solid_tiles())
    report = check_layout(tmp_path, ["0", "1", "2", "3", "4"])
    assert report.tile_size == 6 and sorted(report.found) == ["0", "1"]
    assert report.missing == ["4"] and report.extra == ["99.png", "results.txt"]
    assert report.wrong_size == {"2": "10x10, expected 12x12"} and list(report.unreadable) == ["3"]
    assert not report.ok and any("1 missing: 4" in line for line in report.problems())
    assert check_layout(tmp_path, ["0", "1"], tile_size=6).ok
    assert list(check_layout(tmp_path, ["0"], tile_size=8).wrong_size) == ["0"]
