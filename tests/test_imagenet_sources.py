"""Reading sample sets: streaming npz, folders, arrays, and every bad input naming the file and the fix."""
import zipfile

import numpy as np
import pytest
from PIL import Image

from evaluators.imagenet.errors import InputError
from evaluators.imagenet.sources import FolderSource, HashMemo, NpzSource, open_images


def _images(count=10, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def _batches(source, batch_size=3):
    return np.concatenate(list(source.batches(batch_size)))


def test_npz_is_streamed_stored_or_compressed_with_the_same_images(tmp_path):
    images = _images(10)
    stored, packed = tmp_path / "stored.npz", tmp_path / "packed.npz"
    np.savez(stored, arr_0=images, arr_1=np.arange(10))
    np.savez_compressed(packed, arr_0=images)
    a, b = open_images(stored), open_images(packed)
    assert isinstance(a, NpzSource) and len(a) == 10 and a.resolution == (8, 8)
    np.testing.assert_array_equal(_batches(a), images)
    np.testing.assert_array_equal(_batches(b), images)
    np.testing.assert_array_equal(a.image(7), images[7])          # memory-mapped random access
    with pytest.raises(InputError, match="compressed .npz"):
        b.image(0)


def test_array_and_folder_sources(tmp_path):
    images = _images(5)
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{index:03d}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    folder = open_images(tmp_path)
    assert isinstance(folder, FolderSource) and [f.name for f in folder.files][:2] == ["000.png", "001.png"]
    np.testing.assert_array_equal(_batches(folder, 2), images)
    np.testing.assert_array_equal(_batches(open_images(images)), images)
    np.testing.assert_array_equal(folder.image(3), images[3])
    np.save(tmp_path / "images.npy", images)
    npy = open_images(tmp_path / "images.npy")
    np.testing.assert_array_equal(_batches(npy), images)
    assert npy.content_hash() == npy.file_sha256()


def test_content_hash_is_memoised_by_file_stamp(tmp_path, monkeypatch):
    path = tmp_path / "s.npz"
    np.savez(path, arr_0=_images(4))
    memo = HashMemo(tmp_path / "memo")
    first = open_images(path).content_hash(memo)
    import evaluators.imagenet.sources

    monkeypatch.setattr(evaluators.imagenet.sources, "sha256_file", lambda *a, **k: pytest.fail("file was hashed again"))
    assert open_images(path).content_hash(memo) == first
    assert open_images(_images(4)).content_hash() == open_images(_images(4)).content_hash()
    assert open_images(_images(4)).content_hash() != open_images(_images(4, seed=1)).content_hash()


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path} holds no images"):
        open_images(tmp_path)


def test_mixed_resolutions_name_both_files(tmp_path):
    Image.fromarray(_images(1, 8)[0]).save(tmp_path / "a.png")
    Image.fromarray(_images(1, 16)[0]).save(tmp_path / "b.png")
    with pytest.raises(InputError, match=r"mixed resolutions .*b\.png is 16×16 but a\.png is 8×8"):
        _batches(open_images(tmp_path))


def test_corrupt_image_file_is_named(tmp_path):
    Image.fromarray(_images(1)[0]).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"b\.png is not a readable image"):
        _batches(open_images(tmp_path))


def test_truncated_npz(tmp_path):
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=_images(20))
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(InputError, match=f"{path} is not a readable .npz file .*truncated or corrupt"):
        open_images(path)


def test_corrupt_compressed_member(tmp_path):
    path = tmp_path / "samples.npz"
    np.savez_compressed(path, arr_0=_images(200, 16))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=str(path)):
        _batches(open_images(path), 50)


def test_npz_without_arr_0_lists_its_keys(tmp_path):
    path = tmp_path / "samples.npz"
    np.savez(path, images=_images(2))
    with pytest.raises(InputError, match=r"no 'arr_0' array \(it has \['images'\]\).*np.savez"):
        open_images(path)


@pytest.mark.parametrize("make, message", [
    (lambda: _images(3).astype(np.float32), "float32 images; the ADM protocol needs uint8"),
    (lambda: np.full((3, 8, 8, 3), np.nan, dtype=np.float32), "contains 576 NaN values"),
    (lambda: _images(3).transpose(0, 3, 1, 2), r"transpose with `x.transpose\(0, 2, 3, 1\)`"),
    (lambda: _images(3)[..., 0], r"expected N×H×W×3"),
    (lambda: np.zeros((0, 8, 8, 3), np.uint8), "holds no images"),
])
def test_bad_arrays(make, message):
    with pytest.raises(InputError, match=message):
        open_images(make())


def test_float_npz_with_nans_is_refused_by_name(tmp_path):
    path = tmp_path / "samples.npz"
    images = _images(4).astype(np.float32)
    images[1, 2, 3] = np.nan
    np.savez(path, arr_0=images)
    with pytest.raises(InputError, match=f"{path} \\[arr_0\\] holds float32 images and contains 3 NaN"):
        open_images(path)


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_images(tmp_path / "nope.npz")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(InputError, match="neither a folder"):
        open_images(tmp_path / "x.txt")


def test_stored_npz_with_cut_data_is_truncated(tmp_path):
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=_images(20))
    with zipfile.ZipFile(path) as archive:                       # rewrite the member with half its bytes
        data = archive.read("arr_0.npy")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("arr_0.npy", data[:len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        _batches(open_images(path))


def test_a_range_of_images_comes_in_batches_starting_at_its_first_image(tmp_path):
    """What one torchrun rank reads: [start, stop) in batches start, start + B, …, from every kind of source."""
    images = _images(11)
    np.savez(tmp_path / "stored.npz", arr_0=images)
    np.savez_compressed(tmp_path / "packed.npz", arr_0=images)
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "folder").mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "folder" / f"{index:03d}.png")
    for source in [open_images(images)] + [open_images(tmp_path / name) for name in
                                           ("stored.npz", "packed.npz", "images.npy", "folder")]:
        batches = list(source.batches(3, start=4, stop=10))
        assert [len(batch) for batch in batches] == [3, 3], source.describe()
        np.testing.assert_array_equal(np.concatenate(batches), images[4:10])
        np.testing.assert_array_equal(np.concatenate(list(source.batches(4, start=8))), images[8:])


def test_a_stored_npz_damaged_after_it_was_written_fails_its_zip_crc(tmp_path):
    """np.load checks the CRC, a memory map does not: the hashing pass must, before any image is scored."""
    images = _images(10, size=16)
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=images)
    assert open_images(path).content_hash() == NpzSource(path).file_sha256()      # an intact file passes
    data = bytearray(path.read_bytes())
    offset = data.index(images.tobytes()[:64]) + 1000
    data[offset:offset + 64] = bytes(255 - value for value in data[offset:offset + 64])   # same size, zip intact
    path.write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile):
        np.load(path)["arr_0"]
    with pytest.raises(InputError, match=r"samples.npz \[arr_0\] fails its zip CRC .*re-create it"):
        open_images(path).content_hash(HashMemo(tmp_path / "memo"))
