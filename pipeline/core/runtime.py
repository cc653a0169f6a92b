"""Device, precision and seeding: the few places where CPU and CUDA differ."""

from __future__ import annotations

import contextlib
import functools
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.core import distributed

if TYPE_CHECKING:  # for the annotations only: core sits below config
    from pipeline.config.blocks import FitCfg
    from pipeline.config.schema import ExperimentCfg


def pick_device(cfg: ExperimentCfg) -> torch.device:
    """cuda when present (or asked for), else cpu; also applies the CPU thread count."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    set_deterministic(cfg.deterministic)
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return distributed.cuda_device()  # under torchrun: the GPU of the local rank
    return torch.device("cpu")


@functools.cache
def _cpu() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags, read once from /proc/cpuinfo (none elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown", frozenset()
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    return model, frozenset(flags)


@functools.cache
def cpu_has_bf16() -> bool:
    """Native bf16 matmul support (AVX512-BF16 or AMX); without it bf16 autocast is slower."""
    if not _cpu()[1] & {"avx512_bf16", "amx_bf16"}:
        return False
    # oneDNN held below its bf16 kernels (ONEDNN_MAX_CPU_ISA=AVX2, to measure what most users'
    # CPUs do) emulates bf16, as an AVX2-only CPU does: 1.4 img/s against 12.7 in fp32 for the
    # tgs_salt model's training step there (issue 36).
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "DEFAULT").upper()
    return cap in ("DEFAULT", "ALL") or any(tag in cap for tag in ("BF16", "FP16", "AMX", "AVX10"))


def cpu_info() -> dict:
    """The CPU a run used, for manifests: model, cores, its widest vector instruction set, and
    any cap set on oneDNN and MKL (ONEDNN_MAX_CPU_ISA=AVX2 measures an AVX2-only machine here)."""
    model, flags = _cpu()
    order = ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "avx", "sse4_2")
    isa = next((f for f in order if f in flags), "unknown")
    caps = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ}
    return {"model": model, "cores": os.cpu_count(), "isa": isa, "torch_threads": torch.get_num_threads(), **caps}


def autocast(device: torch.device, tcfg: FitCfg) -> contextlib.AbstractContextManager:
    """Mixed precision: bf16 on CUDA (or fp16 where bf16 is missing), bf16 on a CPU that has it."""
    if tcfg.bf16 == "off":
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if tcfg.bf16 == "on" or cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def needs_grad_scaler(device: torch.device, tcfg: FitCfg) -> bool:
    return device.type == "cuda" and tcfg.bf16 != "off" and not torch.cuda.is_bf16_supported()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_deterministic(on: bool) -> None:
    """Bit-reproducible GPU runs at some cost in speed: cuDNN uses deterministic algorithms
    instead of timing candidates (benchmark picks by timing, so its choice varies between runs),
    and an op that has only a nondeterministic CUDA kernel warns (warn_only: a run that merely
    uses one should not fail). Off restores torch's defaults."""
    if on:
        # cuBLAS is deterministic only with a fixed workspace; read when cuBLAS is first used.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = on
    torch.use_deterministic_algorithms(on, warn_only=True)


def rng_state() -> dict:
    """Every global RNG state, as tensors and plain lists/ints (a weights_only load accepts
    them; numpy's legacy state holds an ndarray, which it would refuse)."""
    version, internal, gauss = random.getstate()
    _, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"key": key.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(cached)},
        "torch": torch.get_rng_state(),
        # Only when CUDA is in use: asking for the state would otherwise start a context per GPU.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state(("MT19937", np.array(npst["key"], dtype=np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and distributed.active() and torch.cuda.is_available():
        # Rank 0 saved its GPU's state (cuda[0]); every rank drew as many numbers as it did.
        torch.cuda.set_rng_state(cuda[0].cpu(), device=torch.cuda.current_device())
    elif cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
