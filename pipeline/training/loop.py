"""The one training loop, shared by segmentation and the classifier.

AdamW, a cosine or one-cycle schedule per step, validation on the fold each epoch with the
competition metric, best-epoch tracking, SWA of the last K epochs (torch.optim.swa_utils with
the BN update), mixed precision, and a checkpoint each epoch holding everything needed to
resume at the next epoch: model, optimiser, schedulers, SWA average, gradient scaler and every
RNG state (pipeline.training.checkpoint keeps the previous one too and loads them weights_only). With the
loader's per-sample keys (pipeline.data.loader) a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn
from torch.utils.data import DataLoader, Dataset

from pipeline.config.blocks import FitCfg
from pipeline.core import distributed, fileio, runtime
from pipeline.data.loader import make_loader, set_epoch
from pipeline.training import checkpoint, schedules
from pipeline.training.step import Task, train_epoch

logger = logging.getLogger(__name__)


def _save_weights(state_dict: dict, path: Path) -> None:
    with fileio.atomic_path(path) as tmp:
        torch.save(state_dict, tmp)


def _plot_curves(history: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(history["epoch"], history["train_loss"], marker="o", label="train loss")
    a.set_xlabel("epoch")
    a.legend()
    if "val_score" in history:  # absent until the first validated epoch (val_every > 1)
        scored = history.dropna(subset=["val_score"])
        b.plot(scored["epoch"], scored["val_score"], marker="o", color="C1", label="val score")
        b.legend()
    b.set_xlabel("epoch")
    fig.tight_layout()
    try:
        # The temp name keeps the .png suffix: savefig picks the format from it.
        fileio.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80), suffix=".png")
    finally:
        plt.close(fig)


def fit_done(out_dir: Path) -> bool:
    """Whether a Fitter finished in `out_dir`: model.pt and a fit.json that parses (it is
    written last; a truncated copy left by an older writer is not finished)."""
    return (out_dir / "model.pt").exists() and isinstance(fileio.read_json(out_dir / "fit.json"), dict)


@dataclass
class _Engine:
    """The training state beside the model that a checkpoint must hold, created together."""

    opt: torch.optim.Optimizer
    sched: Any
    swa: AveragedModel | None
    swa_sched: SWALR | None
    scaler: torch.amp.GradScaler | None
    gen: torch.Generator

    def state_dict(self) -> dict:
        def sd(x):
            return x.state_dict() if x is not None else None

        return {k: sd(getattr(self, k)) for k in ("opt", "sched", "swa", "swa_sched", "scaler")} | {"gen": self.gen.get_state()}

    def load_state_dict(self, ck: dict) -> None:
        for k in ("opt", "sched", "swa", "swa_sched", "scaler"):
            if getattr(self, k) is not None and ck.get(k) is not None:
                getattr(self, k).load_state_dict(ck[k])
        self.gen.set_state(ck["gen"])


class Fitter:
    """Trains one model into `out_dir`, resuming from its checkpoint when one is there."""

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        tcfg: FitCfg,
        out_dir: Path,
        device: torch.device,
        seed: int,
    ) -> None:
        self.model, self.task, self.tcfg, self.out_dir = model, task, tcfg, out_dir
        self.device, self.seed = device, seed
        self.ckpt = out_dir / "checkpoint.pt"
        self.final = out_dir / "model.pt"

    def fit(self, train_ds: Dataset, weights: np.ndarray | None = None, on_epoch_end: Callable[[int], None] | None = None) -> dict:
        """Train (or resume) and write model.pt, metrics.csv, curves.png, fit.json.

        Under torchrun every process calls this for the same model; rank 0 alone validates and
        writes, and all of them resume from its checkpoint."""
        distributed.barrier()  # what rank 0 wrote before (a reused fold, a checkpoint) is there
        if fit_done(self.out_dir):
            return fileio.read_json(self.out_dir / "fit.json")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        runtime.seed_everything(self.seed)
        net, loader, eng = self._prepare(train_ds, weights)
        state = {"epoch": 0, "history": [], "best_score": -math.inf, "best_epoch": -1}
        saved = self._load_checkpoint()  # the newest readable one; None: start afresh
        if saved is not None:
            state = self._resume(saved, eng)
            logger.info(f"resuming {self.out_dir.name} at epoch {state['epoch']}")
        for epoch in range(state["epoch"], self.tcfg.epochs):
            self._epoch(net, loader, eng, state, epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch)
        return self._finish(state, eng.swa, loader)

    def _prepare(self, train_ds: Dataset, weights: np.ndarray | None) -> tuple[nn.Module, DataLoader, _Engine]:
        """The model on its device (wrapped for torchrun), the loader and the optimiser state,
        built in this order after seeding: the draws of each depend on what came before."""
        tcfg, model, device = self.tcfg, self.model, self.device
        model.to(device)
        if tcfg.channels_last:
            model.to(memory_format=torch.channels_last)
        net = distributed.wrap(model, device, tcfg.sync_bn)  # before SWA copies the model
        gen = torch.Generator().manual_seed(self.seed)
        loader = make_loader(train_ds, tcfg, weights, gen)
        opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        swa = AveragedModel(model) if tcfg.swa_epochs > 0 else None
        eng = _Engine(
            opt,
            schedules.build(opt, tcfg, len(loader), self._main_epochs()),
            swa,
            SWALR(opt, swa_lr=tcfg.swa_lr, anneal_epochs=1) if swa is not None else None,
            torch.amp.GradScaler("cuda") if runtime.needs_grad_scaler(device, tcfg) else None,
            gen,
        )
        return net, loader, eng

    def _main_epochs(self) -> int:
        return max(self.tcfg.epochs - self.tcfg.swa_epochs, 0)

    def _epoch(self, net: nn.Module, loader: DataLoader, eng: _Engine, state: dict, epoch: int) -> None:
        """One epoch: train (averaging into SWA in its epochs), validate when due, keep the
        best weights, checkpoint, log."""
        tcfg, model = self.tcfg, self.model
        start = time.perf_counter()
        set_epoch(loader, epoch)
        in_swa = eng.swa is not None and epoch >= self._main_epochs()
        row = train_epoch(
            net,
            loader,
            self.task,
            eng.opt,
            None if in_swa else eng.sched,
            tcfg,
            self.device,
            epoch,
            eng.scaler,
            desc=f"{self.out_dir.name} ep{epoch}",
        )
        if in_swa:
            eng.swa.update_parameters(model)
            eng.swa_sched.step()
        due = ((epoch + 1) % tcfg.val_every == 0 or epoch == tcfg.epochs - 1) and distributed.is_main()
        val = self.task.validate(model) if due else {}
        row.update({"epoch": epoch, "lr": eng.opt.param_groups[0]["lr"], "swa": in_swa, "seconds": round(time.perf_counter() - start, 2)})
        row.update({f"val_{k}": v for k, v in val.items()})
        state["history"].append(row)
        if due and val["score"] > state["best_score"]:
            state["best_score"], state["best_epoch"] = val["score"], epoch
            _save_weights(model.state_dict(), self.out_dir / "best.pt")
        state["epoch"] = epoch + 1
        if distributed.is_main():
            self._checkpoint(state, eng)
        shown = f"{val['score']:.4f}" if due else "-"
        logger.info(f"{self.out_dir.name} epoch {epoch}: loss {row['train_loss']:.4f} val {shown} ({row['seconds']:.0f}s)")

    def _load_checkpoint(self) -> dict | None:
        """The checkpoint to resume from. Under torchrun rank 0 chooses it (setting unreadable
        ones aside) and every process loads that file."""
        found = checkpoint.find(self.ckpt, "cpu") if distributed.is_main() else None
        chosen = distributed.broadcast(found[0] if found else None)
        if found is not None:  # rank 0 (or the only process) holds it already
            return found[1]
        return torch.load(chosen, map_location="cpu", weights_only=True) if chosen else None

    def _checkpoint(self, state: dict, eng: _Engine) -> None:
        # Only tensors and plain data: the checkpoint is loaded with weights_only=True.
        checkpoint.save(
            {
                "state": checkpoint.plain(state),
                "model": self.model.state_dict(),
                **eng.state_dict(),
                "rng": runtime.rng_state(),
                "extra": self.task.hook.state_dict() if self.task.hook else None,
            },
            self.ckpt,
        )
        history = pd.DataFrame(state["history"])
        fileio.write_csv(self.out_dir / "metrics.csv", history)
        _plot_curves(history, self.out_dir / "curves.png")

    def _resume(self, ck: dict, eng: _Engine) -> dict:
        """Restore everything from checkpoint `ck` (loaded on the CPU: load_state_dict moves
        tensors to the model's device, and RNG states must stay CPU tensors)."""
        self.model.load_state_dict(ck["model"])
        eng.load_state_dict(ck)
        runtime.set_rng_state(ck["rng"])
        if self.task.hook is not None and ck.get("extra") is not None:
            self.task.hook.load_state_dict(ck["extra"])
        return ck["state"]

    def _finish(self, state: dict, swa: AveragedModel | None, loader: DataLoader) -> dict:
        if swa is not None:
            # BN statistics of averaged weights are not the average of BN statistics: recompute
            # (under torchrun each process on its share; SyncBatchNorm pools them as it goes).
            set_epoch(loader, self.tcfg.epochs)
            images = (b["image"].to(self.device) for b in loader)
            with runtime.autocast(self.device, self.tcfg):
                update_bn(images, swa)
            distributed.average_buffers(swa.module)
        if distributed.is_main():
            self._save_final(state, swa)
        distributed.barrier()  # the others read model.pt next
        return fileio.read_json(self.out_dir / "fit.json")

    def _save_final(self, state: dict, swa: AveragedModel | None) -> None:
        summary = {"best_epoch": state["best_epoch"], "best_score": state["best_score"], "epochs": self.tcfg.epochs}
        if swa is not None:
            final = swa.module
            summary["swa_score"] = self.task.validate(final)["score"]
            summary["final"] = "swa"
        else:
            # The last epoch's weights, not the best-validated epoch's: the validation images are
            # the fold's OOF images, so picking the epoch on them would choose the model on the
            # labels it is then scored on (best.pt stays beside it, for inspection only).
            final = self.model
            summary["final"] = "last"
        other = self.task.hook.final_model() if self.task.hook is not None else None
        if other is not None:
            # Both scores are kept, so fit.json shows what the swap bought.
            name, final = other
            summary[f"{name}_score"] = self.task.validate(final)["score"]
            summary["final"] = name
        _save_weights(final.state_dict(), self.final)
        fileio.write_json(self.out_dir / "fit.json", summary)
        checkpoint.remove(self.ckpt)
