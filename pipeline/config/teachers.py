"""The pseudo and distill sections: pseudo-label rounds (confidence or predicted-score selection,
mean teacher) and the distilled student."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.fields import Problems, valid


@dataclass
class MeanTeacherCfg:
    enabled: bool  # consistency with an EMA teacher on unlabeled test images while fine-tuning
    weight: float = valid(min=0)  # weight of the consistency loss (MSE of probabilities)
    ema: float  # teacher <- ema x teacher + (1 - ema) x student, after every step
    batch_size: int  # unlabeled test images per step
    noise: float = valid(min=0)  # std of the Gaussian noise added to the student's (normalised) input
    final_teacher: bool  # the teacher, not the student, becomes the fold's model
    mutual: bool  # mutual mean teaching: a peer student, each learning the other's teacher

    def check(self) -> Problems:
        if not 0 < self.ema < 1:
            return [("", f"ema must be in (0, 1), got {self.ema}")]
        if self.batch_size < 2:
            return [("", f"batch_size must be at least 2 (BatchNorm in training mode), got {self.batch_size}")]
        return []


@dataclass
class ScoreSelectCfg:
    """Pseudo-labels chosen by a predicted per-image score (pipeline/training/pseudo_select.py)."""

    enabled: bool
    min_score: float = valid(min=0, max=1)  # keep test images predicted at least this


@dataclass
class PseudoCfg:
    rounds: int = valid(min=0)  # at least 1 when ensemble.models names pseudo
    prob_lo: float = valid(min=0, max=1)
    prob_hi: float = valid(min=0, max=1)
    pixel_lo: float = valid(min=0, max=1)
    pixel_hi: float = valid(min=0, max=1)
    min_confident_share: float = valid(min=0, max=1)
    max_images: int = valid(min=0)
    soft: bool
    epochs: int = valid(min=1)
    mean_teacher: MeanTeacherCfg
    score_select: ScoreSelectCfg


@dataclass
class DistillCfg:
    """One student trained on the soft maps of a blend of teachers (pipeline/training/distill.py)."""

    enabled: bool
    teachers: list[str]  # ensemble.models entries blended into the soft targets (empty: ensemble.models)
    student: str  # segment, or a name of segment.models
    weight: float = valid(min=0, max=1)  # share of the teachers' soft map in a train target (the rest: the mask)
    temperature: float = valid(above=0)  # logits divided by it: > 1 softens the teachers' maps
    test: bool  # also train on the test images with the teachers' soft maps as targets
