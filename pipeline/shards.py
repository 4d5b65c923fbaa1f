"""Deterministic, resumable data order for data-parallel training (no Ray, no global RNG).

- Epoch `e`'s order is a permutation of the dataset indices drawn from a generator seeded by
  (seed, e) alone: every rank computes the same one, and a resumed run sees the same order.
- Rank r of W takes positions r, r+W, r+2W, … (DistributedSampler's interleave), cut into
  batches. The tail that does not fill a whole global batch is dropped, so every rank runs the
  same number of steps (DDP requires it) and `iters_per_epoch = n // (W·B)`.
- Every sample also gets its own augmentation seed from (seed, epoch, index), so the augmented
  image does not depend on which process loads it, in what order, or after which restart.
- The loader position after `k` finished steps of an epoch is just `start_batch = k`.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def _mix(*keys: int) -> int:
    """A well-spread 63-bit seed from small integer keys (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def iters_per_epoch(n: int, world_size: int, batch_size: int) -> int:
    """Full global batches in one pass over `n` samples."""
    if world_size <= 0 or batch_size <= 0:
        raise ValueError(f"world_size and batch_size must be positive, got {world_size}, {batch_size}")
    return n // (world_size * batch_size)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The permutation of range(n) used in `epoch` (identical on every rank)."""
    g = torch.Generator().manual_seed(_mix(seed, epoch))
    return torch.randperm(n, generator=g).tolist()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of sample `index`'s augmentation in `epoch`."""
    return _mix(seed, epoch, index, 1)


def rank_batches(n: int, seed: int, epoch: int, rank: int, world_size: int,
                 batch_size: int) -> list[list[int]]:
    """The batches (dataset indices) rank `rank` trains on in `epoch`, in order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world_size {world_size}")
    steps = iters_per_epoch(n, world_size, batch_size)
    mine = epoch_order(n, seed, epoch)[rank::world_size][:steps * batch_size]
    return [mine[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


class ShardBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batch sampler over one rank's share of an epoch, from batch `start_batch` on.

    Yields lists of `(index, augmentation seed)` pairs; `SeededDataset` unpacks them.
    """

    def __init__(self, n: int, *, seed: int, epoch: int, rank: int, world_size: int,
                 batch_size: int, start_batch: int = 0):
        self.batches = rank_batches(n, seed, epoch, rank, world_size, batch_size)[start_batch:]
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in batch]
