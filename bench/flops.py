"""The training step's achieved FLOP/s against the CPU's peak (issue 36): how far a config's
segmentation training runs from the hardware limit.

FLOPs of one step = 3 x the forward pass's, counted by torch's own FlopCounterMode
(convolutions and matrix products; elementwise work is left out, so the figure is a lower bound
of the work done); the backward pass of a convolution is two products of the forward's size (the
input's and the weights' gradients). Its own count of the backward pass is not used: for this
model (depthwise convolutions) it gave 8.7x the forward pass's, beyond what the two gradients
can cost (torch 2.14). The forward count matches a hand count of the demo model (0.36 GFLOP per
64 px image; the decoder is 0.3 of it). The step is timed over --steps steps after a
warm-up, in the config's precision and memory format. Peak = cores x clock x FLOPs per cycle per
core, where a core's fp32 FLOPs per cycle are 2 FMA units x vector lanes x 2 (AVX-512: 16
lanes, 64; AVX2: 8 lanes, 32): the FMA unit count is not readable from /proc/cpuinfo and two is
an assumption (server cores; many laptop cores have one, which halves the peak). Run it natively
and under the AVX2 cap to compare the two instruction sets:

    .venv/bin/python bench/flops.py [--config configs/demo.yaml] [--steps 20]
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 .venv/bin/python bench/flops.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (the pipeline's OpenMP defaults, before torch loads)

# isort: split
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from pipeline import api  # noqa: E402
from pipeline.core import runtime  # noqa: E402
from pipeline.inference.fold_models import build_model  # noqa: E402


def clock_ghz() -> float:
    """The cores' current clock from /proc/cpuinfo (the nominal one where the kernel reports it)."""
    mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("cpu MHz")]
    return max(mhz) / 1000 if mhz else float("nan")


def peak_gflops(isa: str, cores: int, ghz: float) -> float:
    lanes = 16 if isa.startswith("avx512") or isa.startswith("amx") else 8
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if capped.startswith("AVX2") or capped in ("AVX", "SSE41"):
        lanes = 8
    return cores * ghz * 2 * lanes * 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    cfg = api.load_config(args.config)
    scfg, tcfg = cfg.segment, cfg.segment.train
    device = torch.device("cpu")
    torch.manual_seed(0)
    net = build_model(scfg, 3)
    size, batch = scfg.input.size, tcfg.batch_size
    x, y = torch.randn(batch, 3, size, size), (torch.rand(batch, 1, size, size) > 0.5).float()
    if tcfg.channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)

    def step() -> None:
        opt.zero_grad()
        with runtime.autocast(device, tcfg):
            out = net(x)
        logits = out["mask"] if isinstance(out, dict) else out
        torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :1].float(), y).backward()
        opt.step()

    with FlopCounterMode(display=False) as counter, torch.no_grad(), runtime.autocast(device, tcfg):
        net(x)
    flops = 3 * counter.get_total_flops()
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    info = runtime.cpu_info()
    ghz = clock_ghz()
    peak = peak_gflops(info["isa"], info["cores"], ghz)
    achieved = flops / seconds / 1e9
    print(f"cpu: {info}  clock {ghz:.2f} GHz  bf16 autocast: {runtime.cpu_has_bf16() and tcfg.bf16 != 'off'}")
    print(f"config {Path(args.config).name}: batch {batch} x {size} px, channels_last {tcfg.channels_last}, bf16 {tcfg.bf16}")
    print(f"step: {flops / 1e9:.2f} GFLOP (3 x forward), {seconds * 1000:.1f} ms, {batch / seconds:.1f} img/s")
    print(f"achieved {achieved:.1f} GFLOP/s of a {peak:.0f} GFLOP/s fp32 peak: {100 * achieved / peak:.1f}%")


if __name__ == "__main__":
    main()
