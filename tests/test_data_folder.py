"""Preparing a class folder or a .tar: labels from sorted classes, ADM crop, unreadable files reported."""
import gzip
import io
import logging
import tarfile

import numpy as np
import pytest
from PIL import Image

from pixeldit.data.folder import prepare_folder
from pixeldit.infra.datasets import DatasetError, open_dataset
from pixeldit.infra.images import center_crop_arr

RES = 16


def _save(path, width, height, seed, fmt):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


@pytest.fixture
def class_folder(tmp_path):
    """Three classes (given out of order), five good images of mixed size and format, two bad files."""
    root = tmp_path / "imagenet"
    good = [_save(root / "zebra" / "z1.png", 40, 30, 0, "PNG"),
            _save(root / "cat" / "c2.jpg", 25, 50, 1, "JPEG"),
            _save(root / "cat" / "c1.png", 70, 70, 2, "PNG"),
            _save(root / "dog" / "sub" / "d1.jpg", 33, 20, 3, "JPEG"),
            _save(root / "dog" / "d0.png", 16, 16, 4, "PNG")]
    truncated = _save(root / "dog" / "broken.jpg", 64, 64, 5, "JPEG")
    truncated.write_bytes(truncated.read_bytes()[:300])
    (root / "zebra" / "notes.txt").write_text("not an image")
    return root, good, [truncated, root / "zebra" / "notes.txt"]


# Sorted classes cat < dog < zebra; files sorted by path inside each class.
EXPECTED_ORDER = [("cat", "c1.png"), ("cat", "c2.jpg"), ("dog", "d0.png"), ("dog", "sub/d1.jpg"), ("zebra", "z1.png")]


def _expected_images(root):
    return np.stack([center_crop_arr(Image.open(root / cls / name), RES) for cls, name in EXPECTED_ORDER])


def test_folder_prepare_labels_crops_and_reports_bad_files(class_folder, tmp_path, caplog):
    root, _, bad = class_folder
    with caplog.at_level(logging.WARNING, logger="pixeldit.data.folder"):
        out = prepare_folder(root, tmp_path / "out", RES)
    dataset = open_dataset(out, split="train", checksums=True)
    assert dataset.class_names == ["cat", "dog", "zebra"]
    np.testing.assert_array_equal(dataset.labels, [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(dataset.all_images(), _expected_images(root))
    skipped = dataset.manifest["skipped"]
    assert skipped["count"] == 2
    assert sorted(entry["path"] for entry in skipped["files"]) == sorted(str(path) for path in bad)
    assert all(str(path) in caplog.text for path in bad)
    assert "skipped 2 of 7 files" in caplog.text


def test_tar_of_the_folder_gives_the_same_dataset(class_folder, tmp_path):
    root, _, _ = class_folder
    archive = tmp_path / "imagenet.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname="imagenet")          # one top folder, stripped like `tar cf x.tar imagenet/`
    folder = open_dataset(prepare_folder(root, tmp_path / "from-folder", RES))
    from_tar = open_dataset(prepare_folder(archive, tmp_path / "from-tar", RES))
    np.testing.assert_array_equal(from_tar.all_images(), folder.all_images())
    np.testing.assert_array_equal(from_tar.labels, folder.labels)
    assert from_tar.class_names == folder.class_names
    assert from_tar.manifest["name"] == "imagenet" and from_tar.manifest["source"]["kind"] == "tar"
    assert {entry["path"] for entry in from_tar.manifest["skipped"]["files"]} == {
        f"{archive}:imagenet/dog/broken.jpg", f"{archive}:imagenet/zebra/notes.txt"}


def test_worker_processes_give_the_same_bytes(class_folder, tmp_path):
    root, _, _ = class_folder
    archive = tmp_path / "imagenet.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname="imagenet")
    serial = open_dataset(prepare_folder(archive, tmp_path / "serial", RES)).manifest
    parallel = open_dataset(prepare_folder(archive, tmp_path / "parallel", RES, workers=2)).manifest
    assert parallel["shards"] == serial["shards"] and parallel["labels"] == serial["labels"]
    assert parallel["skipped"] == serial["skipped"]


def test_compressed_tar_is_refused_with_the_fix(class_folder, tmp_path):
    root, _, _ = class_folder
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(root, arcname="imagenet")
    archive = tmp_path / "imagenet.tar.gz"
    archive.write_bytes(gzip.compress(buffer.getvalue()))
    with pytest.raises(DatasetError, match="compressed tar.*gunzip"):
        prepare_folder(archive, tmp_path / "out", RES)


def test_files_outside_class_folders_are_reported_not_dropped(class_folder, tmp_path):
    root, _, _ = class_folder
    (root / "README.txt").write_text("loose file")
    dataset = open_dataset(prepare_folder(root, tmp_path / "out", RES))
    loose = {"path": str(root / "README.txt"), "reason": "not inside a class folder"}
    assert loose in dataset.manifest["skipped"]["files"]
    assert len(dataset) == 5


def test_source_without_classes_or_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        prepare_folder(tmp_path / "empty", tmp_path / "out", RES)
    (tmp_path / "bad" / "cls").mkdir(parents=True)
    (tmp_path / "bad" / "cls" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="no images were written"):
        prepare_folder(tmp_path / "bad", tmp_path / "out", RES)
    assert not (tmp_path / "out").exists()
    with pytest.raises(DatasetError, match="neither a class folder nor a .tar"):
        prepare_folder(tmp_path / "missing", tmp_path / "out", RES)
