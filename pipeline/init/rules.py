"""From a fingerprint (pipeline.init.fingerprint) to a plan: each rule returns config values
with the reason it chose them, and the reason is written beside them in the YAML. The budget
(epochs, folds trained, TTA views) is set afterwards by pipeline.init.budget from a timed probe."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

STRIDE = 32
# Up to this side a whole image is one network input (padded to a multiple of 32); above it,
# or with sizes that vary, a CPU trains on tiles and predicts with a sliding window.
PAD_MAX = 256
GATING_EMPTY_SHARE = 0.2  # empty masks this common: an empty-mask classifier pays for itself
MAJORITY = 0.5  # a foreground covering most of most images is drawn inverted (background as 0)


@dataclass
class Choice:
    key: str  # dotted config key
    value: Any
    reason: str


@dataclass
class Plan:
    choices: list[Choice] = field(default_factory=list)

    def set(self, key: str, value: Any, reason: str) -> None:
        self.choices = [c for c in self.choices if c.key != key] + [Choice(key, value, reason)]

    def get(self, key: str, default: Any = None) -> Any:
        return next((c.value for c in self.choices if c.key == key), default)


def _up32(x: float) -> int:
    return int(math.ceil(x / STRIDE) * STRIDE)


def _diameter(area: float) -> float:
    return 2.0 * math.sqrt(max(area, 0.0) / math.pi)


def _object_quantile(fp: dict, q: str) -> float:
    """A quantile of object areas (px) over every class that has objects."""
    values = [c["object_area"][q] for c in fp["per_class"].values() if c["object_area"]]
    return float(min(values)) if q in ("q05", "q25") and values else float(max(values, default=0.0))


def orientation(fp: dict) -> bool:
    """True when a binary mask's foreground covers most of most images: the mask is then
    read inverted (data.mask_invert), since the pipeline's gating, oversampling and small-object
    post-processing all assume a foreground that is the rarer part."""
    if fp["k"] > 1:
        return False
    return fp["per_class"]["foreground"]["majority_share"] > MAJORITY


def input_plan(fp: dict, plan: Plan) -> None:
    """Pad small same-size images; tile large or varied ones with an overlap from the object size."""
    train = fp["train"]
    side = max(train["height"]["q50"], train["width"]["q50"])
    varied = train["height"]["max"] > 1.25 * train["height"]["min"] or train["width"]["max"] > 1.25 * train["width"]["min"]
    big = _diameter(_object_quantile(fp, "q95"))
    wide = max((c["object_width"]["q95"] for c in fp["per_class"].values() if c.get("object_width")), default=big)
    if side <= PAD_MAX and not varied:
        size = _up32(max(train["height"]["max"], train["width"]["max"]))
        plan.set(
            "segment.input",
            {"mode": "pad", "size": size, "tile_overlap": 0},
            f"images of at most {size} px of one size: whole images, reflect-padded to {size} (a multiple of 32)",
        )
        return
    # A tile should hold an object across its width: twice the 95th-percentile width of the
    # widest object per image (its extent would make a membrane network's tile the whole image),
    # between 128 and 256 px (larger tiles buy context a CPU cannot pay for).
    across = min(big, wide)
    tile = min(256, max(128, _up32(2 * across)))
    overlap = min(tile // 2 - STRIDE // 2, max(STRIDE, _up32(min(across, tile) / 2)))
    why = "sizes vary" if varied else f"images of {side:.0f} px"
    plan.set(
        "segment.input",
        {"mode": "tile", "size": tile, "tile_overlap": overlap},
        f"{why}: {tile} px tiles at full resolution (2 x the 95th-percentile object width {across:.0f} px, within 128-256), "
        f"sliding-window inference with {overlap} px overlap (half an object)",
    )


def smaller_inputs(fp: dict, plan: Plan) -> list[tuple[dict, str]]:
    """Cheaper inputs to fall back on when the planned one does not fit the budget, largest
    first: whole images resized down (while the 5th-percentile object keeps 2 px across), or
    smaller training tiles (inference reads the same pixels)."""
    inp = plan.get("segment.input")
    side = max(fp["train"]["height"]["max"], fp["train"]["width"]["max"])
    small = _diameter(_object_quantile(fp, "q05"))
    out = []
    if inp["mode"] == "pad":
        for size in (96, 64):
            if size < side and small * size / side >= 2:
                out.append(
                    (
                        {"mode": "resize", "size": size, "tile_overlap": 0},
                        f"resized to {size} px: the budget does not fit {inp['size']} px (the 5th-percentile object keeps {small * size / side:.1f} px across)",
                    )
                )
    elif inp["mode"] == "tile":
        for size in range(inp["size"] - STRIDE, 127, -STRIDE):
            overlap = min(inp["tile_overlap"], size // 2 - STRIDE // 2)
            out.append(
                (
                    {"mode": "tile", "size": size, "tile_overlap": overlap},
                    f"{size} px training tiles: the budget does not fit {inp['size']} px",
                )
            )
    return out


def batch_plan(fp: dict, plan: Plan) -> None:
    """32 inputs of 128 px a step, fewer for larger inputs (the same pixels a step), and at least
    4 steps an epoch: on 24 training images a batch of 32 made each epoch one step."""
    size = plan.get("segment.input")["size"]
    n_folds = plan.get("folds.n_folds")
    fit = int(fp["train"]["count"] * (n_folds - 1) / n_folds)
    by_pixels = max(8, min(32, int(32 * (128 / size) ** 2)))
    batch = max(2, min(by_pixels, fit // 4))
    why = f"{by_pixels} inputs of {size} px a step (32 at 128 px)" + (
        f", at most a quarter of the {fit} training images: 4 steps an epoch" if batch < by_pixels else ""
    )
    plan.set("segment.train.batch_size", batch, why)


def use_input(fp: dict, plan: Plan, inp: dict, reason: str) -> None:
    """Switch the plan to another segmentation input (and the classifier's, where it follows it)."""
    plan.set("segment.input", inp, reason)
    batch_plan(fp, plan)
    cls = plan.get("classify.input")
    if plan.get("classify.enabled") and cls and not plan.get("classify.patch"):
        plan.set("classify.input", dict(inp), "the classifier sees the image as the segmentation does")


def fold_plan(fp: dict, plan: Plan) -> None:
    n = fp["train"]["count"]
    folds = 5 if n < 200 else 3
    plan.set(
        "folds.n_folds",
        folds,
        f"{n} train images: {folds} folds ({'each model trains on 80%: few images' if folds == 5 else 'each model on two thirds; more folds cost time a CPU does not have'})",
    )
    if fp["k"] > 1:
        plan.set(
            "folds.stratify",
            "classes",
            "K classes: folds stratified by each image's combination of classes, so every fold holds the rare ones",
        )
    else:
        plan.set("folds.stratify", "coverage", "one class: folds stratified by coverage bins (empty masks their own bin)")
    candidates = [m["column"] for m in fp["metadata"] if m["group_candidate"]]
    dup = fp["duplicates"]
    if dup["groups"]:
        why = f"{dup['images']} images in {dup['groups']} groups of exact or near duplicates: each group in one fold, so no image is scored by a model that saw its copy"
        plan.set("folds.duplicates", True, why)
    if candidates:
        plan.set(
            "folds.group_column",
            candidates[0],
            f"metadata column {candidates[0]!r} repeats labels ({next(m['distinct'] for m in fp['metadata'] if m['column'] == candidates[0])} distinct): folds keep each group whole",
        )


def class_plan(fp: dict, plan: Plan) -> None:
    if fp["k"] == 1:
        return
    plan.set("data.classes", fp["classes"], f"{fp['k']} classes")
    if fp["exclusive_observed"]:
        plan.set("data.exclusive", True, "no pixel holds two classes in the train masks")
        plan.set("segment.target", "multiclass", "exclusive classes: a softmax over background + K classes")
    else:
        plan.set("data.exclusive", False, "some pixels hold two classes: the classes overlap")
        plan.set("segment.target", "multilabel", "overlapping classes: a sigmoid per class")
    rare = min(c["images"] for c in fp["per_class"].values())
    plan.set(
        "segment.train.oversample.rare_class",
        0.5,
        f"the rarest class is in {rare} images: images drawn more often the rarer their rarest class",
    )


def gating_plan(fp: dict, plan: Plan) -> None:
    share = fp["empty_share"]
    on = share >= GATING_EMPTY_SHARE
    plan.set(
        "classify.enabled",
        on,
        f"{share:.0%} of the train masks are empty: {'an empty-mask classifier gates each prediction' if on else 'too few empty masks for a classifier to pay for its time'}",
    )
    if on and fp["k"] > 1:
        plan.set("classify.source", "separate", "K classes: a multi-label image classifier of its own (one logit per class)")
        plan.set("classify.loss", "weighted_bce", "per-class positive weights: the rare classes (issue 35 measured it above focal loss)")
    if on:
        mode = plan.get("segment.input")["mode"]
        size = plan.get("segment.input")["size"]
        if mode == "tile":
            plan.set(
                "classify.input",
                {"mode": "resize", "size": 192, "tile_overlap": 0},
                "large or varied images: the classifier reads patches of the image (patch mode)",
            )
            plan.set(
                "classify.patch",
                {"enabled": True, "size": 128, "stride": 96, "aggregate": "weighted"},
                "patch mode, confidence-weighted: a small defect is not averaged away by a whole-image resize",
            )
        else:
            plan.set(
                "classify.input",
                {"mode": "pad", "size": size, "tile_overlap": 0},
                "the classifier sees the whole image as the segmentation does",
            )


def oversample_plan(fp: dict, plan: Plan) -> None:
    """Bins from where the masks' coverage lies: draw the rarer bins more often."""
    cov = [c["coverage"] for c in fp["per_class"].values() if c["coverage"]]
    if not cov:
        return
    median = min(c["q50"] for c in cov)
    small = 3.0 if median < 0.1 else 2.0  # the `small` bin is coverage below 10%
    weights = {"empty": 1.0, "small": small, "medium": 2.0 if median < 0.5 else 1.0, "large": 1.0}
    if fp["k"] > 1:
        weights["rare_class"] = plan.get("segment.train.oversample.rare_class", 0.0)
        plan.choices = [c for c in plan.choices if c.key != "segment.train.oversample.rare_class"]
    plan.set(
        "segment.train.oversample", weights, f"median coverage of a non-empty mask {median:.1%}: images with small masks drawn {small:.0f}x"
    )


def postprocessing_plan(fp: dict, plan: Plan) -> None:
    """Minimum areas from the object sizes; gates only with a classifier."""
    q05, q25, q50 = (_object_quantile(fp, q) for q in ("q05", "q25", "q50"))
    areas = sorted({0, *(int(round(a / 2)) for a in (q05, q25, q50) if a >= 2)})
    plan.set(
        "scorer.min_areas",
        areas,
        f"half the 5th, 25th and 50th percentile object areas ({q05:.0f}, {q25:.0f}, {q50:.0f} px): specks smaller than real objects are dropped",
    )
    plan.set("scorer.thresholds", [0.3, 0.4, 0.5, 0.6, 0.7], "the probability threshold is chosen per fold on the others (nested CV)")
    gates = [0.0, 0.2, 0.4, 0.6, 0.8] if plan.get("classify.enabled") else [0.0]
    plan.set("scorer.gates", gates, "classifier gates to choose from" if len(gates) > 1 else "no classifier: no gate")


def metric_plan(fp: dict, plan: Plan, metric: str | None) -> None:
    if metric:
        plan.set("submit.metric", metric, "given on the command line (--metric)")
    elif fp["k"] > 1:
        plan.set("submit.metric", "dice", "K classes: mean Dice over (image, class) rows, empty-empty = 1 (steel, clouds)")
    else:
        plan.set("submit.metric", "dice", "mean Dice per image, empty-empty = 1 (pass --metric tgs or iou for another leaderboard)")


def shift_plan(fp: dict, plan: Plan) -> None:
    tr, te = fp["intensity"]["train"], fp["intensity"]["test"]
    if not te or not tr:
        return
    shift = abs(tr["mean"] - te["mean"]) / max(tr["std"], 1e-6)
    contrast = te["std"] / max(tr["std"], 1e-6)
    # The demo's test set: gain 0.87 and offset +20 move the mean by 0.04 std but the contrast by 12%.
    on = shift > 0.1 or abs(contrast - 1) > 0.05
    what = f"test images' mean intensity {te['mean']:.1f} against train {tr['mean']:.1f} ({shift:.2f} std), contrast x {contrast:.2f}"
    plan.set(
        "ensemble.adabn", on, what + (": BatchNorm statistics re-estimated on the test set (AdaBN)" if on else ": no shift worth AdaBN")
    )


def make_plan(fp: dict, metric: str | None = None) -> Plan:
    """Every rule in order."""
    plan = Plan()
    class_plan(fp, plan)
    input_plan(fp, plan)
    fold_plan(fp, plan)
    batch_plan(fp, plan)
    gating_plan(fp, plan)
    oversample_plan(fp, plan)
    postprocessing_plan(fp, plan)
    metric_plan(fp, plan, metric)
    shift_plan(fp, plan)
    plan.set(
        "pseudo.rounds",
        0,
        "pseudo-labels cost a fine-tuning round per fold; switch on once the budget allows and the test set is unlike the train set",
    )
    return plan
