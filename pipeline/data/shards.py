"""Resumable batches over one rank's share of an epoch.

The order itself belongs to the data pipeline: `pipeline.data.datasets.ShardedSampler` yields
`(index, seed, epoch)` keys, a permutation drawn from (seed, epoch) alone and split evenly over
ranks, and `InstanceDataset[key]` draws the sample's augmentation from (seed, epoch, index).
What training adds here is the loader *position*: `ResumableBatchSampler` cuts a rank's keys
into full batches (the tail is dropped, so every rank runs the same number of steps, which DDP
and Ray's report barrier need) and starts at batch `start_batch`. After `k` finished steps the
position is `divmod(k, iters_per_epoch)`, so a checkpoint's iteration is all a resumed run needs
to continue with exactly the batches it would have seen.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
from torch.utils.data import Sampler


def derive_seed(*keys: int) -> int:
    """A well-spread 63-bit seed from small integer keys (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


def iters_per_epoch(keys_per_rank: int, batch_size: int) -> int:
    """Full batches a rank runs per epoch."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return keys_per_rank // batch_size


class ResumableBatchSampler(Sampler[list[Any]]):
    """Full batches of `keys` (one rank's epoch, in order), from batch `start_batch` on."""

    def __init__(self, keys: Iterable[Any], batch_size: int, start_batch: int = 0):
        keys = list(keys)
        n = iters_per_epoch(len(keys), batch_size)
        if not 0 <= start_batch <= n:
            raise ValueError(f"start_batch {start_batch} outside 0..{n} ({len(keys)} keys, "
                             f"batch_size {batch_size})")
        self.batches = [keys[i * batch_size:(i + 1) * batch_size] for i in range(start_batch, n)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(self.batches)
