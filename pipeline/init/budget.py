"""Size a plan to a time budget: the probe's seconds per input, times the inputs each stage
sees, gives each stage's time as a function of the epochs; the epochs are the most that fit the
budget with a margin, then fewer folds trained and fewer TTA views where even the fewest
epochs do not fit. Every figure lands in the config's comments and the fingerprint.json."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.init.probe import Probe
from pipeline.init.rules import Plan

MARGIN = 0.75  # share of the budget planned: the machine's speed varies 1.5x from day to day
# The pipeline's time per input over the probe's bare step: data loading and augmentation,
# distance targets, the loss terms, SWA's BatchNorm pass (training); stitching, flips and the
# store (inference). Measured (docs/results.md, issue 38): the demo's epochs at 64 px took 1.27x
# the probe's time a training input; isbi2012's at 256 px 0.7x, and its plan ran in 0.5x its
# estimate with 1.6 / 1.5 here; an estimate on the high side only leaves budget unused.
TRAIN_OVERHEAD, INFER_OVERHEAD = 1.25, 1.3
# Each fold-epoch's own cost (checkpoint, schedule, logging): isbi2012's 825 fold-epochs of 24
# tiles ran 184 s over the per-input estimate.
EPOCH_S = 0.25
FIXED_S = 45.0  # ingest, folds, scorer, submit and process starts (the demo: about 30 s)
MIN_EPOCHS, MAX_EPOCHS = 4, 60
# On a small dataset an epoch is a few steps: the cap is then on the inputs seen per fold
# (60 epochs of 250 images), not on epochs (isbi2012 has 24 training images per fold).
MAX_SEEN = 15000
CLS_EPOCHS = 6


def cls_epochs(epochs: int) -> int:
    """The classifier's epochs: two thirds of the segmentation's, at most CLS_EPOCHS (the
    hand-written configs: 4-6; it converges in a few and should not take the segmentation's time)."""
    return max(2, min(CLS_EPOCHS, round(epochs * 2 / 3)))


@dataclass
class Sizing:
    epochs: int
    folds_trained: int
    tta: list[str]
    cls_epochs: int
    estimate: dict[str, float] = field(default_factory=dict)
    fits: bool = True


def _per_axis(side: float, size: int, step: int) -> int:
    return 1 if side <= size else math.ceil((side - size) / max(step, 1)) + 1


def inputs_per_image(fp: dict, plan: Plan) -> tuple[int, int]:
    """Network inputs per image at inference: segmentation tiles, classifier patches."""
    h, w = fp["train"]["height"]["q50"], fp["train"]["width"]["q50"]
    inp = plan.get("segment.input")
    tiles = 1
    if inp["mode"] == "tile":
        step = inp["size"] - inp["tile_overlap"]
        tiles = _per_axis(h, inp["size"], step) * _per_axis(w, inp["size"], step)
    patches = 1
    patch = plan.get("classify.patch")
    if patch and patch.get("enabled"):
        side = plan.get("classify.input")["size"]
        patches = _per_axis(side, patch["size"], patch["stride"]) ** 2
    return tiles, patches


def estimate(fp: dict, plan: Plan, probe: Probe, s: Sizing, n_folds: int) -> dict[str, float]:
    """Seconds per stage for a sizing."""
    n, n_test = fp["train"]["count"], fp["test"]["count"] or fp["train"]["count"]
    tiles, patches = inputs_per_image(fp, plan)
    views = len(s.tta)
    fit_images = n * (n_folds - 1) / n_folds
    val_images = n / n_folds
    segment = s.folds_trained * (
        s.epochs * (fit_images * probe.seg_train * TRAIN_OVERHEAD + EPOCH_S) + val_images * tiles * views * probe.seg_infer * INFER_OVERHEAD
    )
    classify = 0.0
    if plan.get("classify.enabled") and probe.cls_train > 0:
        classify = s.folds_trained * (
            s.cls_epochs * (fit_images * probe.cls_train * TRAIN_OVERHEAD + EPOCH_S)
            + val_images * patches * views * probe.cls_infer * INFER_OVERHEAD
        )
        classify += n_test * patches * views * s.folds_trained * probe.cls_infer * INFER_OVERHEAD
    ensemble = n_test * tiles * views * s.folds_trained * probe.seg_infer * INFER_OVERHEAD
    out = {"classify": classify, "segment": segment, "ensemble": ensemble, "other": FIXED_S}
    return {k: round(v, 1) for k, v in out.items()} | {"total": round(sum(out.values()), 1)}


def size(fp: dict, plan: Plan, probe: Probe, budget_s: float, fewer_folds: bool = True) -> Sizing:
    """The most epochs that fit MARGIN x budget; one TTA view, then (with `fewer_folds`) fewer
    folds trained, when MIN_EPOCHS does not fit; `fits` False when nothing does."""
    n_folds = plan.get("folds.n_folds")
    target = MARGIN * budget_s
    options = [(n_folds, ["none", "hflip"]), (n_folds, ["none"])]
    options += [(f, ["none"]) for f in range(n_folds - 1, 1, -1)] if fewer_folds else []
    fit_images = fp["train"]["count"] * (n_folds - 1) / n_folds
    most = max(MAX_EPOCHS, math.ceil(MAX_SEEN / fit_images))
    for folds, tta in options:
        for epochs in range(most, MIN_EPOCHS - 1, -1):  # estimates are arithmetic: cheap to scan
            s = Sizing(epochs, folds, tta, cls_epochs(epochs))
            s.estimate = estimate(fp, plan, probe, s, n_folds)
            if s.estimate["total"] <= target:
                return s
    s = Sizing(MIN_EPOCHS, 2, ["none"], cls_epochs(MIN_EPOCHS), fits=False)
    s.estimate = estimate(fp, plan, probe, s, n_folds)
    return s


def apply(plan: Plan, s: Sizing, budget_s: float) -> None:
    """The sizing's config values, each with the arithmetic behind it."""
    e = s.estimate
    why = (
        f"the most epochs whose estimate fits {MARGIN:.0%} of the {budget_s / 60:.0f}-minute budget: "
        f"classify {e['classify']:.0f} s + segment {e['segment']:.0f} s + test inference {e['ensemble']:.0f} s + {e['other']:.0f} s = {e['total']:.0f} s"
    )
    if not s.fits:
        why = f"the budget is too small for {MIN_EPOCHS} epochs of 2 folds: this plan is estimated at {e['total']:.0f} s"
    swa = max(1, s.epochs // 6)
    plan.set("segment.train.epochs", s.epochs, why)
    plan.set("segment.train.swa_epochs", swa, "weights averaged over the last sixth of the epochs (SWA)")
    plan.set("segment.train.val_every", s.epochs, "validated after the last epoch only: with SWA, earlier passes only draw the curves")
    phase = max(1, s.epochs - max(2, s.epochs // 4))
    first = {"ce": 1.0, "dice": 1.0} if plan.get("segment.target") == "multiclass" else {"bce": 1.0, "dice": 1.0}
    plan.set(
        "segment.train.loss",
        [{"until_epoch": phase, "terms": first}, {"until_epoch": 0, "terms": {"lovasz": 1.0}}],
        f"{'cross-entropy' if 'ce' in first else 'BCE'} + Dice to epoch {phase}, then Lovasz (the IoU surrogate) to fine-tune",
    )
    n_folds = plan.get("folds.n_folds")
    if s.folds_trained < n_folds:
        folds = list(range(s.folds_trained))
        plan.set(
            "segment.train.folds",
            folds,
            f"{s.folds_trained} of {n_folds} folds trained: all folds do not fit the budget at {MIN_EPOCHS} epochs",
        )
        if plan.get("classify.enabled"):
            plan.set("classify.train.folds", folds, "the classifier on the same folds")
    plan.set("segment.train.tta", s.tta, "flip TTA" if len(s.tta) > 1 else "no TTA: test inference did not fit with flips")
    if plan.get("classify.enabled"):
        plan.set(
            "classify.train.epochs", s.cls_epochs, "two thirds of the segmentation epochs, at most 6: the classifier converges in a few"
        )
        plan.set("classify.train.tta", s.tta, "as the segmentation")
