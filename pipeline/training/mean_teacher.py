"""Mean teacher (Tarvainen & Valpola, 2017) for a test set from a shifted domain.

While a fold model is fine-tuned on its labelled part, each step also draws a batch of
unlabeled test images: an EMA copy of the model (the teacher, in eval mode) predicts the clean
view, the model being trained (the student) predicts a noisy, flipped view, and the mean squared
difference of their probabilities joins the loss. The student so learns to be stable on the test
domain; its BatchNorm layers, in training mode on the test batches, also see the test statistics
(what AdaBN does once, here all along). The teacher's weights and buffers follow the student by
`torch.optim.swa_utils`' EMA, updated after every optimiser step. With `final_teacher` the
teacher, which the paper found the more accurate of the two, is saved as the fold's model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import default_collate

from pipeline.config.segment import SegmentCfg
from pipeline.config.teachers import MeanTeacherCfg
from pipeline.core import runtime
from pipeline.core.store import ArrayStore
from pipeline.data.datasets import Geometry, SegDataset


class MeanTeacher:
    """Consistency loss on unlabeled images against an EMA teacher, the teacher's update and
    their checkpoint state: a `training.step.StepHook`."""

    def __init__(self, images: ArrayStore, geometry: Geometry, cfg: MeanTeacherCfg, scfg: SegmentCfg, seed: int) -> None:
        self.cfg, self.tcfg = cfg, scfg.train
        # A softmax's probabilities (background channel included) sum to one per pixel; sigmoid
        # classes are compared each on its own.
        self.activate = (lambda t: torch.softmax(t, dim=1)) if scfg.softmax else torch.sigmoid
        # Every random draw (batches, perturbations) comes from this one generator, so the
        # teacher's state and the generator's are all a resumed fine-tuning needs.
        self.gen = torch.Generator().manual_seed(seed)
        self.ds = SegDataset(images, None, np.arange(len(images)), geometry)
        self.teacher: AveragedModel | None = None
        self._pending: dict | None = None  # teacher weights from a checkpoint, applied once built

    def _teacher(self, student: nn.Module) -> AveragedModel:
        # Built on first use, when the student already sits on its device in its memory format.
        if self.teacher is None:
            self.teacher = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.ema), use_buffers=True)
            self.teacher.eval()
            if self._pending is not None:
                self.teacher.load_state_dict(self._pending)
                self._pending = None
        return self.teacher

    def _batch(self) -> torch.Tensor:
        picks = torch.randint(len(self.ds), (self.cfg.batch_size,), generator=self.gen)
        # The dataset's own generator (random crops in tile mode) is not in the checkpoint:
        # reseed it per image from this one, which is.
        keys = torch.randint(2**62, (self.cfg.batch_size,), generator=self.gen)
        images = []
        for i, key in zip(picks.tolist(), keys.tolist(), strict=True):
            self.ds.reseed((key,))
            images.append(self.ds[i])
        return default_collate(images)["image"]

    def state_dict(self) -> dict:
        """Teacher weights and the generator, for the fine-tuning checkpoint."""
        teacher = self.teacher.state_dict() if self.teacher is not None else self._pending
        return {"teacher": teacher, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        if self.teacher is not None and state["teacher"] is not None:
            self.teacher.load_state_dict(state["teacher"])
        else:
            self._pending = state["teacher"]

    def _perturb(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Student view: Gaussian noise plus a random gain and offset per image, then a
        horizontal flip (undone on the output so both maps line up)."""
        n = x.shape[0]
        gain = 1 + 0.1 * (2 * torch.rand(n, 1, 1, 1, generator=self.gen) - 1)
        offset = 0.1 * (2 * torch.rand(n, 1, 1, 1, generator=self.gen) - 1)
        noise = self.cfg.noise * torch.randn(x.shape, generator=self.gen)
        return (x.cpu() * gain + offset + noise).flip(-1).to(device)

    @property
    def memory_format(self) -> torch.memory_format:
        """The training loop's input layout."""
        return torch.channels_last if self.tcfg.channels_last else torch.contiguous_format

    def views(self, student: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """One unlabeled batch on the student's device: the clean view and the student's
        noisy, flipped view."""
        x = self._batch()
        device = next(student.parameters()).device
        clean = x.to(device).contiguous(memory_format=self.memory_format)
        return clean, self._perturb(x, device).contiguous(memory_format=self.memory_format)

    def consistency(self, student: nn.Module, teacher: nn.Module, clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """MSE between the student's probabilities on the noisy view (flipped back) and the
        teacher's on the clean view."""
        device = clean.device
        with torch.no_grad(), runtime.autocast(device, self.tcfg):
            target = self.activate(teacher(clean)["mask"].float())
        with runtime.autocast(device, self.tcfg):
            out = student(noisy)["mask"]
        return torch.mean((self.activate(out.float().flip(-1)) - target) ** 2)

    def loss(self, student: nn.Module, batch: dict | None = None, epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted MSE between student and teacher probabilities on one unlabeled batch (the
        labelled `batch` is not used here; a mutual teacher trains its peer on it)."""
        clean, noisy = self.views(student)
        mse = self.consistency(student, self._teacher(student), clean, noisy)
        return self.cfg.weight * mse, {"consistency": float(mse.detach())}

    def update(self, student: nn.Module, opt: torch.optim.Optimizer | None = None) -> None:
        self._teacher(student).update_parameters(student)

    def final_model(self) -> tuple[str, nn.Module] | None:
        """The teacher as the fold's model when configured (and once it exists)."""
        if not self.cfg.final_teacher or self.teacher is None:
            return None
        return "teacher", self.teacher.module
