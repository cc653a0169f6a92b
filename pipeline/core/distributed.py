"""Data-parallel training under torchrun (torch.distributed + DistributedDataParallel).

`torchrun --nproc_per_node N -m pipeline STAGE --config X` starts N copies of the same command;
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...) tells each its place, and
multi-node runs use torchrun's own rendezvous. Every rank computes the same stage keys from the
same config. Rank 0 alone takes the locks, writes artifacts and manifests and runs the stages
that do not train; the other ranks join the training loops only (cache.run_stage keeps them in
step with barriers). Without torchrun (WORLD_SIZE unset) every function here is a no-op and the
process is rank 0 of 1.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from pipeline.core.errors import UserError

if TYPE_CHECKING:  # torch is imported where used: the lock and cache modules import this one
    import torch
    from torch import nn

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Rank 0 alone predicts OOF maps and runs the non-training stages while the others wait in a
# barrier: the default 30-minute collective timeout would kill a long ensemble stage.
TIMEOUT = datetime.timedelta(hours=6)


def world() -> int:
    """Number of processes of this run (torchrun's WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    """Whether a process group of more than one process is running."""
    if world() <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def setup(device: str = "auto") -> None:
    """Join the process group torchrun described (gloo on CPU, NCCL on CUDA); a no-op for a
    single process or when already joined. Each rank takes the GPU of its local rank."""
    if world() <= 1 or active():
        return
    import torch
    import torch.distributed as dist

    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    if not is_main():
        # One log per run: the other ranks say only what goes wrong.
        logging.getLogger("pipeline").setLevel(logging.WARNING)
    logger.info(f"distributed: {world()} processes, backend {dist.get_backend()}")


def cuda_device() -> torch.device:
    import torch

    return torch.device("cuda", local_rank()) if active() else torch.device("cuda")


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def broadcast(value: T) -> T:
    """Rank 0's `value` on every rank (any picklable object)."""
    if not active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 alone (e.g. it writes files), then give its result to every rank once
    rank 0 is done, so that the others may read what it wrote."""
    return broadcast(fn() if is_main() else None)


def batch_problem(batch_size: int, key: str, processes: int) -> str | None:
    """Why the global batch `key` cannot be split evenly over `processes`, or None."""
    return f"{key}: {batch_size} is not divisible by the {processes} processes of this torchrun run" if batch_size % processes else None


def per_rank_batch(batch_size: int, key: str) -> int:
    """The batch each process loads: `batch_size` is the global batch, split evenly, so that one
    process and N processes take the same optimiser steps over the same samples."""
    n = world() if active() else 1
    problem = batch_problem(batch_size, key, n)
    if problem:
        raise UserError(problem)
    return batch_size // n


def wrap(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """`model` wrapped in DistributedDataParallel (its BatchNorms synchronised across processes
    when `sync_bn`), or `model` itself outside a process group. The module is converted in
    place, so the caller's reference trains and saves the same weights."""
    if not active():
        return model
    from torch import nn

    if sync_bn and device.type != "cuda":
        # torch's SyncBatchNorm runs on GPUs only.
        logger.warning("sync_bn: SyncBatchNorm needs CUDA; on the CPU each process keeps its own BatchNorm statistics")
    elif sync_bn:
        sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Every BatchNorm of `model` (in place) a SyncBatchNorm with the same state. timm's converter:
    torch's replaces timm's BatchNormAct2d (the EfficientNet encoders' BatchNorm with its
    activation inside) by a plain SyncBatchNorm, dropping the activation."""
    from timm.layers import convert_sync_batchnorm

    for name, child in list(model.named_children()):
        setattr(model, name, convert_sync_batchnorm(child))
    return model


def unwrap(model: nn.Module) -> nn.Module:
    from torch import nn

    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def average_buffers(model: nn.Module) -> None:
    """Average BatchNorm running statistics over the processes (after each process re-estimated
    them on its own share of the data, e.g. SWA's BN update); SyncBatchNorm layers pooled them
    already."""
    if not active():
        return
    import torch.distributed as dist
    from torch import nn

    for module in model.modules():
        if (
            isinstance(module, nn.modules.batchnorm._BatchNorm)
            and not isinstance(module, nn.SyncBatchNorm)
            and module.running_mean is not None
        ):
            for buf in (module.running_mean, module.running_var):
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf /= world()


def shard(n_samples: int, batch_size: int) -> Iterator[int]:
    """This rank's positions in one epoch's sample order of `n_samples`: each global batch of `batch_size`
    consecutive positions is cut into `world()` equal slices, and rank r takes slice r. Every
    rank gets the same number of batches (a partial last batch is dropped, as the loader's
    drop_last does), so the collective steps stay matched."""
    n, r = world(), rank()
    per = batch_size // n
    full = n_samples // batch_size
    if full == 0:  # fewer samples than one batch: one smaller batch, split evenly
        per, full, batch_size = n_samples // n, 1, (n_samples // n) * n
    for b in range(full):
        start = b * batch_size + r * per
        yield from range(start, start + per)
