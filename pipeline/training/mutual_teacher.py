"""Mutual mean teaching (Ge et al., ICLR 2020) for a shifted test domain.

Two students fine-tune together: the fold's model (A, trained by the pipeline's loop) and a
peer (B, stepped here). Each learns the labelled batch and, on unlabeled test images, the
probabilities of the *other* student's EMA teacher, so a student's own mistakes are not fed back
to it as targets (the weakness of a single mean teacher). They start from the same weights (the
previous round's fold model); the peer trains on the mirrored labelled batch and draws its own
noise, so the two drift apart. With `final_teacher` A's teacher becomes the fold's model.

Honest CV as for the mean teacher: the peer sees the same training part and test images as A,
never fold k's validation images.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline.core import runtime
from pipeline.training.mean_teacher import MeanTeacher

Batch = dict[str, torch.Tensor]
MIRRORED = ("image", "mask", "dist")  # the batch entries a horizontal flip mirrors


class MutualTeacher(MeanTeacher):
    """A `training.step.StepHook`: A's consistency term against B's teacher, B's step, both teachers'
    updates and their checkpoint state."""

    def __init__(self, *args, peer: nn.Module, supervised: Callable[[dict, Batch, int], tuple[torch.Tensor, dict]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.peer, self.supervised = copy.deepcopy(peer), supervised
        self.peer_opt: torch.optim.Optimizer | None = None
        self.peer_teacher: AveragedModel | None = None
        self._peer_pending: dict | None = None
        self.scaler: torch.amp.GradScaler | None = None

    def _ready(self, student: nn.Module) -> None:
        """Peer, its optimiser and its teacher on the student's device (built on first use)."""
        if self.peer_opt is not None:
            return
        device = next(student.parameters()).device
        self.peer.to(device, memory_format=self.memory_format).train()
        self.peer_opt = torch.optim.AdamW(self.peer.parameters(), lr=self.tcfg.lr, weight_decay=self.tcfg.weight_decay)
        self.peer_teacher = AveragedModel(self.peer, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.ema), use_buffers=True).eval()
        # fp16 autocast (a GPU without bf16) needs loss scaling, as the fold model's step has.
        self.scaler = torch.amp.GradScaler("cuda") if runtime.needs_grad_scaler(device, self.tcfg) else None
        if self._peer_pending is not None:
            self.peer.load_state_dict(self._peer_pending["peer"])
            self.peer_opt.load_state_dict(self._peer_pending["peer_opt"])
            self.peer_teacher.load_state_dict(self._peer_pending["peer_teacher"])
            if self.scaler is not None and self._peer_pending.get("scaler"):
                self.scaler.load_state_dict(self._peer_pending["scaler"])
            self._peer_pending = None

    def loss(self, student: nn.Module, batch: Batch | None = None, epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        self._ready(student)
        clean, noisy = self.views(student)
        own_teacher = self._teacher(student)
        mse = self.consistency(student, self.peer_teacher, clean, noisy)
        peer_parts = self._step_peer(batch, epoch, own_teacher, clean)
        return self.cfg.weight * mse, {"consistency": float(mse.detach()), **peer_parts}

    def _step_peer(self, batch: Batch | None, epoch: int, teacher: nn.Module, clean: torch.Tensor) -> dict[str, float]:
        """One optimiser step of the peer: the mirrored labelled batch plus consistency with
        A's teacher on its own noisy view of the same unlabeled images."""
        device = clean.device
        noisy = self._perturb(clean.cpu(), device).contiguous(memory_format=self.memory_format)
        mse = self.consistency(self.peer, teacher, clean, noisy)
        total, parts = self.cfg.weight * mse, {}
        if batch is not None:
            mirrored = {k: (v.flip(-1) if k in MIRRORED else v) for k, v in batch.items()}
            with runtime.autocast(device, self.tcfg):
                out = self.peer(mirrored["image"])
            sup, _ = self.supervised({k: v.float() for k, v in out.items()}, mirrored, epoch)
            total, parts = total + sup, {"peer_loss": float(sup.detach())}
        self.peer_opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.peer_opt)
            self.scaler.update()
        else:
            total.backward()
            self.peer_opt.step()
        return {**parts, "peer_consistency": float(mse.detach())}

    def update(self, student: nn.Module, opt: torch.optim.Optimizer | None = None) -> None:
        super().update(student)
        self.peer_teacher.update_parameters(self.peer)
        if opt is not None:  # the peer follows the fold model's schedule (warm-up, decay, SWA lr)
            for group in self.peer_opt.param_groups:
                group["lr"] = opt.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.peer_opt is None:
            return state | {"mutual": self._peer_pending}
        peer = {"peer": self.peer.state_dict(), "peer_opt": self.peer_opt.state_dict(), "peer_teacher": self.peer_teacher.state_dict()}
        # The peer's loss scale (fp16 autocast) resumes with it, as the fold model's does.
        return state | {"mutual": peer | {"scaler": self.scaler.state_dict() if self.scaler is not None else None}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._peer_pending = state.get("mutual")
        self.peer_opt = None  # rebuilt, with the saved state, at the next step
