"""The dataset format: sharded round trip, atomic writes, and clear errors for damaged datasets."""
import json
import re

import numpy as np
import pytest

from pixeldit.data.digits import prepare_digits32
from pixeldit.infra.datasets import DatasetError, DatasetWriter, open_dataset, shard_name


def _fields(out):
    return {"name": "tiny", "num_classes": 3, "class_names": ["a", "b", "c"], "source": {"kind": "test"},
            "preprocessing": "none", "prepare_command": f"pixeldit-bench data prepare SRC --out {out} --res 4"}


def test_round_trip_across_shards_keeps_order_and_labels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (11, 4, 4, 3), dtype=np.uint8)   # (11, 4, 4, 3)
    labels = np.arange(11) % 3
    out = tmp_path / "tiny"
    with DatasetWriter(out, 4, shard_bytes=4 * 4 * 3 * 4) as writer:                        # 4 images per shard
        for image, label in zip(images, labels):
            writer.add(image, label)
        writer.finish(_fields(out), splits={"train": (0, 8), "test": (8, 11)})
    dataset = open_dataset(out)
    assert [entry["count"] for entry in dataset.manifest["shards"]] == [4, 4, 3]
    order = np.array([10, 0, 5, 4, 3])                                                     # crosses every shard
    batch_images, batch_labels = dataset.get_batch(order)
    np.testing.assert_array_equal(batch_images, images[order])
    np.testing.assert_array_equal(batch_labels, labels[order])
    test = open_dataset(out, split="test")
    assert len(test) == 3 and test[1][1] == labels[9]
    np.testing.assert_array_equal(test.all_images(), images[8:])
    with pytest.raises(DatasetError, match="no split 'val'.*'test', 'train'"):
        open_dataset(out, split="val")


def test_interrupted_write_leaves_no_dataset(tmp_path):
    out = tmp_path / "tiny"
    with pytest.raises(RuntimeError):
        with DatasetWriter(out, 4) as writer:
            writer.add(np.zeros((4, 4, 3), np.uint8), 0)
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []          # neither the target nor the temporary directory remain
    # A hard kill runs no cleanup: the partial directory stays hidden and the target still does not exist.
    writer = DatasetWriter(out, 4)
    writer.add(np.zeros((4, 4, 3), np.uint8), 0)
    assert not out.exists()
    with pytest.raises(DatasetError, match="not a prepared dataset.*pixeldit-bench data prepare"):
        open_dataset(out)


def test_refuses_to_overwrite_without_flag_and_never_a_foreign_directory(tmp_path):
    out = prepare_digits32(tmp_path / "d32")
    with pytest.raises(DatasetError, match="--overwrite"):
        DatasetWriter(out, 32)
    prepare_digits32(out, overwrite=True)
    assert len(open_dataset(out)) == 1797
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a dataset"):
        DatasetWriter(foreign, 32, overwrite=True)


@pytest.fixture
def digits(tmp_path):
    return prepare_digits32(tmp_path / "d32")


def test_truncated_shard_is_named_with_the_rebuild_command(digits):
    shard = digits / shard_name(0)
    shard.write_bytes(shard.read_bytes()[:-1000])
    rebuild = re.escape(f"pixeldit-bench data prepare digits32 --out {digits}")
    with pytest.raises(DatasetError, match=rf"{re.escape(str(shard))}.*{rebuild}"):
        open_dataset(digits)


def test_missing_shard_is_named(digits):
    (digits / shard_name(0)).unlink()
    missing = re.escape(str(digits / shard_name(0)))
    with pytest.raises(DatasetError, match=rf"{missing} is missing.*data prepare digits32"):
        open_dataset(digits)


def test_flipped_byte_is_caught_by_checksums(digits):
    shard = digits / shard_name(0)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    open_dataset(digits)                            # structure is intact: the cheap check passes
    with pytest.raises(DatasetError, match=rf"checksum mismatch.*{shard_name(0)}.*data prepare digits32"):
        open_dataset(digits, checksums=True)


def test_corrupt_or_inconsistent_manifest(digits):
    manifest_path = digits / "dataset.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["count"] = 1000
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="do not add up.*data prepare digits32"):
        open_dataset(digits)
    manifest_path.write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json is corrupt.*pixeldit-bench data prepare"):
        open_dataset(digits)
