"""The embedded digits32 dataset: real digits, fixed stratified split, byte-identical rebuilds."""
import numpy as np
from sklearn.datasets import load_digits

from pixeldit.data.digits import digits32_images, digits32_split, prepare_digits32
from pixeldit.infra.datasets import open_dataset


def test_two_builds_are_byte_identical(tmp_path):
    first = open_dataset(prepare_digits32(tmp_path / "a"), checksums=True).manifest
    second = open_dataset(prepare_digits32(tmp_path / "b"), checksums=True).manifest
    assert first["shards"] == second["shards"] and first["labels"] == second["labels"]
    assert (tmp_path / "a" / "images-00000.npy").read_bytes() == (tmp_path / "b" / "images-00000.npy").read_bytes()


def test_splits_are_stratified_disjoint_and_cover_everything(tmp_path):
    path = prepare_digits32(tmp_path / "d32")
    train, reference = open_dataset(path, split="train"), open_dataset(path, split="reference")
    assert (len(train), len(reference)) == (1297, 500)
    assert np.bincount(reference.labels, minlength=10).tolist() == [50] * 10
    source_counts = np.bincount(load_digits().target)
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), source_counts - 50)
    train_indices, reference_indices = digits32_split(load_digits().target)
    assert np.intersect1d(train_indices, reference_indices).size == 0
    assert np.union1d(train_indices, reference_indices).tolist() == list(range(1797))
    images, labels = digits32_images()
    np.testing.assert_array_equal(reference.all_images(), images[reference_indices])
    np.testing.assert_array_equal(train.labels, labels[train_indices])


def test_images_are_upsampled_real_digits():
    images, labels = digits32_images()
    assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[..., 0], images[..., 2])            # grey replicated to RGB
    digits = load_digits()
    # Block means of the 32x32 upsampling track the 8x8 source (bicubic preserves the coarse picture).
    blocks = images[..., 0].reshape(1797, 8, 4, 8, 4).mean(axis=(2, 4))       # (1797, 8, 8)
    correlation = np.corrcoef(blocks.ravel(), digits.images.ravel())[0, 1]
    assert correlation > 0.95
    np.testing.assert_array_equal(labels, digits.target)
