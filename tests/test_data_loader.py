"""ImageBatches: per-(seed, epoch) shuffling, rank sharding, seeded flips, exact resume."""
from itertools import islice

import numpy as np
import pytest
import torch

from pixeldit.data.loader import ImageBatches, to_model_range
from pixeldit.infra.datasets import DatasetWriter, open_dataset

COUNT, RES = 103, 4


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """Images that carry their own index (channels 0 and 1) and a left-to-right ramp (channel 2, shows flips)."""
    out = tmp_path_factory.mktemp("data") / "indexed"
    with DatasetWriter(out, RES, shard_bytes=40 * RES * RES * 3) as writer:        # 3 shards
        for index in range(COUNT):
            image = np.zeros((RES, RES, 3), np.uint8)
            image[..., 0], image[..., 1] = index % 256, index // 256
            image[..., 2] = np.arange(RES) * 10                                      # ramp along W
            writer.add(image, index % 7)
        writer.finish({"name": "indexed", "num_classes": 7, "class_names": list("abcdefg"), "source": {},
                       "preprocessing": "synthetic", "prepare_command": "test"})
    return open_dataset(out)


def _ids(images):
    """Dataset indices of a batch N×3×H×W."""
    return (images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).tolist()


def _is_flipped(images):
    return (images[:, 2, 0, 0] > images[:, 2, 0, -1]).tolist()


def _take(loader, count):
    return list(islice(loader, count))


def test_batch_format(indexed):
    images, labels = next(ImageBatches(indexed, batch_size=8, seed=0))
    assert images.shape == (8, 3, RES, RES) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist() == [i % 7 for i in _ids(images)]
    scaled = to_model_range(images)
    assert scaled.dtype == torch.float32 and scaled.min() >= -1 and scaled.max() <= 1


def test_same_seed_same_batches_other_seed_or_epoch_differs(indexed):
    per_epoch = len(ImageBatches(indexed, batch_size=10, seed=3))                   # 10 batches
    first = [_ids(images) for images, _ in _take(ImageBatches(indexed, batch_size=10, seed=3), 2 * per_epoch)]
    again = [_ids(images) for images, _ in _take(ImageBatches(indexed, batch_size=10, seed=3), 2 * per_epoch)]
    other = [_ids(images) for images, _ in _take(ImageBatches(indexed, batch_size=10, seed=4), per_epoch)]
    assert first == again
    assert first[:per_epoch] != other
    assert first[:per_epoch] != first[per_epoch:]                                  # a new order each epoch
    assert len(set(sum(first[:per_epoch], []))) == 100                              # no repeats inside an epoch


def test_rank_shards_are_disjoint_cover_one_epoch_and_match_the_single_rank_order(indexed):
    world_size, batch_size = 4, 5
    per_rank = [_take(ImageBatches(indexed, batch_size, seed=7, rank=rank, world_size=world_size), 5)
                for rank in range(world_size)]
    assert {len(ImageBatches(indexed, batch_size, seed=7, rank=r, world_size=world_size)) for r in range(4)} == {5}
    seen = [i for batches in per_rank for images, _ in batches for i in _ids(images)]
    assert len(seen) == len(set(seen)) == 100                                      # 103 // 4 = 25 per rank
    # The epoch order does not depend on the rank count: global batch k = single-rank items k*20 .. k*20+19.
    single = sum((_ids(images) for images, _ in _take(ImageBatches(indexed, 20, seed=7), 5)), [])
    for k in range(5):
        global_batch = {i for batches in per_rank for i in _ids(batches[k][0])}
        assert global_batch == set(single[k * 20:(k + 1) * 20])


def test_flip_is_off_by_default_and_seeded_when_on(indexed):
    for images, _ in _take(ImageBatches(indexed, batch_size=10, seed=0), 10):
        assert not any(_is_flipped(images))
        np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), indexed.get_batch(_ids(images))[0])
    flips = {}
    for images, _ in _take(ImageBatches(indexed, batch_size=10, seed=0, flip=True), 10):
        flips.update(zip(_ids(images), _is_flipped(images)))
    assert 20 < sum(flips.values()) < 80
    # Same item, same epoch, two ranks of a world of 2: the flip decision follows the item, not the rank.
    for rank in range(2):
        for images, _ in _take(ImageBatches(indexed, batch_size=10, seed=0, rank=rank, world_size=2, flip=True), 5):
            assert all(flips[i] == f for i, f in zip(_ids(images), _is_flipped(images)))


def test_resume_from_state_dict_sees_the_same_following_batches(indexed):
    uninterrupted = _take(ImageBatches(indexed, batch_size=8, seed=1, rank=1, world_size=2, flip=True), 20)
    interrupted = ImageBatches(indexed, batch_size=8, seed=1, rank=1, world_size=2, flip=True)
    _take(interrupted, 7)                                    # 6 batches per epoch: the resume point is in epoch 1
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "index": 1}
    resumed = ImageBatches(indexed, batch_size=8, seed=1, rank=1, world_size=2, flip=True)
    resumed.load_state_dict(state)
    started = ImageBatches(indexed, batch_size=8, seed=1, rank=1, world_size=2, flip=True, start_position=7)
    for loader in (resumed, started):
        for (images, labels), (expected_images, expected_labels) in zip(_take(loader, 13), uninterrupted[7:]):
            assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_bad_arguments_are_explained(indexed):
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ImageBatches(indexed, batch_size=60, seed=0, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        ImageBatches(indexed, batch_size=4, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="another batch size, world size"):
        ImageBatches(indexed, batch_size=4, seed=0).load_state_dict({"epoch": 0, "index": 99})
