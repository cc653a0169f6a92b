"""manifest.json: what a finished stage folder records (its key, resolved config, inputs,
package versions, timings and metrics). Written last, by atomic rename: its presence is what
makes a stage folder finished (pipeline.engine.cache)."""

from __future__ import annotations

import importlib.metadata
import platform
import time
from typing import TYPE_CHECKING

from pipeline.core import distributed, fileio, runtime

if TYPE_CHECKING:
    from pipeline.engine.cache import Context

MANIFEST = "manifest.json"
PACKAGES = (
    "torch",
    "segmentation-models-pytorch",
    "timm",
    "albumentations",
    "numpy",
    "opencv-python-headless",
    "lightgbm",
    "scikit-learn",
    "pandas",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def write(ctx: Context, material: dict, seconds: float, metrics: dict) -> None:
    """The stage's manifest.json, from its context, key material, run time and metrics."""
    out = {
        "stage": ctx.stage,
        "key": ctx.key,
        "seed": ctx.cfg.experiment.seed,
        "experiment": ctx.cfg.experiment.name,
        "config_file": ctx.cfg.source,
        "config": material["config"],
        "inputs": {
            "files": material["inputs"],
            "upstream": {u: str(p) for u, p in ctx.upstream.items()},
        },
        "upstream_keys": material["upstream"],
        "versions": package_versions(),
        "host": platform.node(),
        "cpu": runtime.cpu_info(),  # instruction set and any AVX2 cap: timings differ by 5x between them
        "processes": distributed.world(),  # torchrun's world size (in no key)
        "timings": {
            "seconds": round(seconds, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        "metrics": metrics,
        **ctx.extra_manifest,
    }
    fileio.write_json(ctx.dir / MANIFEST, out)
