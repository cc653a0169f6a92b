"""Eager against exported (TorchScript, ONNX in onnxruntime) fold models: parity and test inference speed.

For a config whose stages have run, fold 0's trained segmentation model (the first model of
`ensemble.models`) predicts the test images through `pipeline.inference.predict.predict` with the
config's inference spec (geometry, TTA views, bf16 and channels_last as configured), once as
the eager smp network, as the TorchScript file `bundle --export torchscript` writes and as
the ONNX file of `--export onnx` in onnxruntime (fp32).
Prints the largest absolute difference of each output over the test images (each export
against the eager model at its own precision, and the eager model's bf16 against fp32), and
img/s of each variant (eager as configured and in fp32, TorchScript as configured, ONNX):
the median of alternating rounds in one process (the machine's speed drifts).

Run: .venv/bin/python bench/export_speed.py --config configs/tgs_salt.yaml [--images 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import api  # noqa: E402
from pipeline.bundle.export import max_difference, to_onnx, trace  # noqa: E402
from pipeline.bundle.planner import FirstImages  # noqa: E402
from pipeline.core.store import ArrayStore  # noqa: E402
from pipeline.data.geometry import to_tensor  # noqa: E402
from pipeline.data.tables import fold_model_paths  # noqa: E402
from pipeline.inference.fold_models import OnnxNet, load_fold, seg_infer_spec, seg_network  # noqa: E402
from pipeline.inference.predict import predict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tgs_salt.yaml")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cfg = api.load_config(args.config)
    src = api.bundle_sources(cfg)
    path = fold_model_paths(next(iter(src.models.values())))[0]
    test = FirstImages(ArrayStore(api.artifact(cfg, "ingest_test"), "test_images"), args.images)
    device = torch.device("cpu")
    spec = seg_infer_spec(cfg.segment, device, cfg.segment.train.tta)
    eager = load_fold(seg_network(cfg, test[0].shape[2]), path).eval()
    example = torch.stack([to_tensor(spec.geometry.forward(np.asarray(test[i]))) for i in range(2)])
    tmp = tempfile.mkdtemp()
    torch.jit.save(trace(eager, example), f"{tmp}/fold0.ts")
    to_onnx(eager, example, Path(f"{tmp}/fold0.onnx"))
    fp32 = dataclasses.replace(spec, tcfg=dataclasses.replace(spec.tcfg, bf16="off"))
    variants = {  # name: (model, spec); onnxruntime computes in fp32 whatever the spec says
        "eager": (eager, spec),
        "eager fp32": (eager, fp32),
        "torchscript": (torch.jit.load(f"{tmp}/fold0.ts", map_location="cpu"), spec),
        "onnx": (OnnxNet(Path(f"{tmp}/fold0.onnx")), fp32),
    }
    print(
        f"model {path} | {len(test)} test images | TTA {list(spec.tta)} | bf16 {cfg.segment.train.bf16} | threads {torch.get_num_threads()}"
    )
    # Each exported model against the eager one at the same precision; the last row is how far
    # bf16 autocast (the config's precision) moves the eager model from fp32.
    for name, ref in (("torchscript", "eager"), ("onnx", "eager fp32"), ("eager", "eager fp32")):
        (a, spec_a), (b, spec_b) = variants[ref], variants[name]
        diff = max_difference(a, b, test, spec_a, len(test), spec_b)
        print(f"max |{ref} - {name}| per output: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    times: dict[str, list[float]] = {name: [] for name in variants}
    idx = np.arange(len(test))
    for model, vspec in variants.values():  # warm-up
        list(predict(model, test, idx[:32], vspec))
    for _ in range(args.rounds):
        for name, (model, vspec) in variants.items():
            start = time.perf_counter()
            list(predict(model, test, idx, vspec))
            times[name].append(len(test) / (time.perf_counter() - start))
    base = statistics.median(times["eager"])
    for name, t in times.items():
        print(
            f"{name:<12} {statistics.median(t):7.1f} img/s  ratio {statistics.median(t) / base:.2f}  (rounds: {', '.join(f'{x:.0f}' for x in t)})"
        )


if __name__ == "__main__":
    main()
