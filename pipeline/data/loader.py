"""The training DataLoader, with per-sample random draws that depend only on (dataset seed,
epoch, position in the epoch).

A dataset that draws randomness (random crops, augmentation) from its own generator breaks two
things: with num_workers > 0 each worker gets a copy of the dataset and so of its generator,
and the workers repeat each other's draws; and the generator's state lives in the workers, out
of reach of the epoch checkpoint, so a resumed run draws differently from an uninterrupted one.
Here the sampler (in the main process) hands each sample a key (epoch, position), and the
dataset reseeds from it before the sample is built: the draws are the same for any number of
workers, and a resumed run needs only the epoch number and the sampler's generator (which
the checkpoint holds) to draw exactly what an uninterrupted run drew.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler, Sampler, Subset, WeightedRandomSampler

from pipeline.config.blocks import FitCfg
from pipeline.core import distributed

Key = tuple[int, int, int]  # (index, epoch, position in the epoch)


def reseed(ds: Dataset, key: tuple[int, ...]) -> None:
    """Reseed every dataset under `ds` that draws randomness (has `reseed`, e.g. SegDataset).
    All parts of a ConcatDataset get the same key: only one of them builds the next sample."""
    if hasattr(ds, "reseed"):
        ds.reseed(key)
    elif isinstance(ds, ConcatDataset):
        for part in ds.datasets:
            reseed(part, key)
    elif isinstance(ds, Subset):
        reseed(ds.dataset, key)


class KeyedSampler(Sampler[Key]):
    """`base`'s indices, each with the epoch (set by the training loop) and its position.

    Under torchrun each process draws the whole epoch's order from an identically seeded
    generator (so the oversampling weights hold over the whole run) and keeps its share of every
    global batch of `batch_size` (pipeline.core.distributed.shard). The positions stay global, so
    each sample gets the same augmentation as in a one-process run."""

    def __init__(self, base: Sampler[int], batch_size: int) -> None:
        self.base, self.batch_size, self.epoch = base, batch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.base)  # type: ignore[arg-type]
        return sum(1 for _ in distributed.shard(n, self.batch_size)) if distributed.active() else n

    def __iter__(self) -> Iterator[Key]:
        if not distributed.active():
            for pos, i in enumerate(self.base):
                yield int(i), self.epoch, pos
            return
        order = list(self.base)
        for pos in distributed.shard(len(order), self.batch_size):
            yield int(order[pos]), self.epoch, pos


class KeyedDataset(Dataset):
    """`ds` indexed by a KeyedSampler's keys: reseeds from (epoch, position), then loads."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, key: Key):
        i, epoch, pos = key
        reseed(self.ds, (epoch, pos))
        sample = self.ds[i]
        # The global position travels with a dict sample, for draws made on whole batches
        # (progressive crops) that must not depend on the number of processes.
        return {**sample, "position": torch.tensor(pos)} if isinstance(sample, dict) else sample


def make_loader(ds: Dataset, tcfg: FitCfg, weights: np.ndarray | None, generator: torch.Generator) -> DataLoader:
    """Training loader; weights (oversampling) switch to sampling with replacement. `generator`
    orders the samples; call `set_epoch` before each pass."""
    if weights is not None and not np.allclose(weights, weights[0]):
        base: Sampler[int] = WeightedRandomSampler(weights.tolist(), num_samples=len(ds), replacement=True, generator=generator)
    else:
        base = RandomSampler(ds, generator=generator)
    # drop_last avoids a 1-sample batch, which BatchNorm rejects in training mode.
    return DataLoader(
        KeyedDataset(ds),
        batch_size=distributed.per_rank_batch(tcfg.batch_size, "train.batch_size"),
        sampler=KeyedSampler(base, tcfg.batch_size),
        num_workers=tcfg.num_workers,
        drop_last=len(ds) > tcfg.batch_size,
        persistent_workers=tcfg.num_workers > 0,
        # The loader draws its workers' base seed when an iterator starts (with persistent
        # workers: only the first one); from the global torch RNG, that draw would shift the
        # model's random stream (dropout) depending on where a run was resumed.
        generator=torch.Generator().manual_seed(0),
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Key the next pass over `loader` by `epoch` (a no-op for other loaders)."""
    if isinstance(loader.sampler, KeyedSampler):
        loader.sampler.set_epoch(epoch)
