"""Deterministic, sharded, exactly resumable batches for training.

Epoch e uses one permutation of the dataset, drawn from (seed, e). Rank r of world_size takes every
world_size-th item of it (`perm[r::world_size]`, after dropping the tail so every rank has the same count),
and cuts its items into full batches of `batch_size` (the last partial batch is dropped too). The global
batch is batch_size × world_size, and global batch k is `perm[k*B*W:(k+1)*B*W]`, whatever W is.

Batches are uint8 tensors N×3×H×W (4× smaller than float; the training step converts on its device with
`to_model_range`, to [-1, 1]) and int64 labels (N,). The stream is endless: epochs follow each other.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from pixeldit.infra.datasets import ImageDataset
from pixeldit.infra.images import to_model_range

__all__ = ["ImageBatches", "to_model_range"]   # to_model_range lives in pixeldit.infra.images; kept importable here


class ImageBatches:
    """Endless iterator of (images uint8 N×3×H×W, labels int64 N) for one rank.

    Determinism: the permutation of epoch e comes from `numpy.random.default_rng([seed, e])`; the flip of the
    item at position i of that permutation comes from `default_rng([seed, e, FLIP_STREAM])`, so flips do not
    depend on the rank count either. Horizontal flip is off by default, as in PixelDiT's ImageNet training.

    Resume: `state_dict()` is {"epoch", "index"}, the epoch and batch index (within the epoch, per rank)
    of the next batch; `load_state_dict` of it continues with exactly the batches an uninterrupted run sees
    (same seed, batch size and world size). `start_position` is the same thing as a count of batches this
    rank has already drawn since the start (epoch × batches_per_epoch + index).
    """

    FLIP_STREAM = 1   # separates the flip stream from the permutation stream of the same (seed, epoch)

    def __init__(self, dataset: ImageDataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 flip: bool = False, start_position: int = 0):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1, world_size >= 1 and 0 <= rank < world_size; got "
                             f"batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.items_per_rank = len(dataset) // world_size
        self.batches_per_epoch = self.items_per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"dataset {dataset.path} (split {dataset.split}) has {len(dataset)} images, fewer than "
                             f"one global batch of {batch_size} x {world_size}; lower --batch-size")
        if start_position < 0:
            raise ValueError(f"start_position must be >= 0, got {start_position}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.flip = flip
        self.epoch, self.index = divmod(start_position, self.batches_per_epoch)
        self._epoch_cache: tuple[int, np.ndarray, np.ndarray] | None = None   # (epoch, items, flips) of this rank

    def __len__(self) -> int:
        """Batches per epoch for this rank (the stream itself does not end)."""
        return self.batches_per_epoch

    def __iter__(self) -> "ImageBatches":
        return self

    def _rank_items(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's dataset indices (items_per_rank,) for `epoch` and whether to flip each (items_per_rank,)."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            size = len(self.dataset)
            permutation = np.random.default_rng([self.seed, epoch]).permutation(size)          # (size,)
            if self.flip:
                flips = np.random.default_rng([self.seed, epoch, self.FLIP_STREAM]).random(size) < 0.5  # (size,)
            else:
                flips = np.zeros(size, dtype=bool)
            kept = self.items_per_rank * self.world_size   # drop the tail so every rank gets the same count
            positions = np.arange(self.rank, kept, self.world_size)                          # (items_per_rank,)
            self._epoch_cache = (epoch, permutation[positions], flips[positions])
        return self._epoch_cache[1], self._epoch_cache[2]

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        items, flips = self._rank_items(self.epoch)
        window = slice(self.index * self.batch_size, (self.index + 1) * self.batch_size)
        images, labels = self.dataset.get_batch(items[window])                      # B×H×W×3 uint8, (B,)
        flip_rows = flips[window]                                                   # (B,)
        images[flip_rows] = images[flip_rows, :, ::-1]                              # mirror the W axis
        # Advance before returning, so state_dict() taken after receiving a batch points at the next one.
        self.epoch, self.index = divmod(self.epoch * self.batches_per_epoch + self.index + 1,
                                        self.batches_per_epoch)
        return (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),          # B×3×H×W uint8
                torch.from_numpy(labels))                                          # (B,) int64

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or not 0 <= index < self.batches_per_epoch:
            raise ValueError(f"loader state {dict(state)} is out of range for {self.batches_per_epoch} batches per "
                             f"epoch; was it saved with another batch size, world size or dataset?")
        self.epoch, self.index = epoch, index
