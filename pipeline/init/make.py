"""`python -m pipeline init`: read a dataset through the ingest contract, fingerprint it, plan
from rules, size the plan with a timed probe, write the config and its fingerprint.json."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.config import loader
from pipeline.core import paths
from pipeline.core.durations import parse_duration
from pipeline.core.errors import UserError
from pipeline.core.fileio import write_text
from pipeline.core.runtime import cpu_has_bf16
from pipeline.data.duplicates import duplicate_groups
from pipeline.data.ingest import scan_dataset
from pipeline.data.sources import Sources
from pipeline.init import budget, rules
from pipeline.init.fingerprint import duplicates_summary, fingerprint
from pipeline.init.probe import Probe, run_probe
from pipeline.init.writer import nested, refuse_existing, render, write_config

log = logging.getLogger(__name__)


@dataclass
class InitArgs:
    train_images: str
    out: str
    budget: str
    train_masks: str | None = None
    train_rle: str | None = None
    test_images: str | None = None
    metadata: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    metric: str | None = None


def _config_path(p: str | None) -> str | None:
    """A path as the config holds it: relative to the repository root (where configs resolve
    from), whatever the directory init ran in."""
    if p is None:
        return None
    return os.path.relpath(os.path.abspath(p), paths.REPO_ROOT)


def _sources(a: InitArgs, invert: bool = False) -> Sources:
    if (a.train_masks is None) == (a.train_rle is None):
        raise UserError("init: give --train-masks DIR or --train-rle CSV (one of them)")
    return Sources(
        train_images=paths.resolve(_config_path(a.train_images)),
        train_masks=paths.resolve(_config_path(a.train_masks)),
        train_rle_csv=paths.resolve(_config_path(a.train_rle)),
        test_images=paths.resolve(_config_path(a.test_images)),
        metadata_csv=[paths.resolve(_config_path(m)) for m in a.metadata],
        classes=tuple(a.classes),
        # Exclusivity is measured, not assumed: the scan accepts overlaps, the fingerprint counts them.
        exclusive=False if a.train_rle or not a.classes else True,
        mask_invert=invert,
    )


def _data_section(a: InitArgs, invert: bool) -> dict:
    data = {
        "train_images": _config_path(a.train_images),
        "train_masks": _config_path(a.train_masks),
        "train_rle_csv": _config_path(a.train_rle),
        # No test folder: the train images stand in (a dry run that validates; point it at the real one).
        "test_images": _config_path(a.test_images or a.train_images),
        "sample_submission": None,
        "solution_masks": None,
        "metadata": [_config_path(m) for m in a.metadata],
    }
    if invert:
        data["mask_invert"] = True
    return data


def _header(a: InitArgs, fp: dict, probe: dict, s: budget.Sizing, invert: bool) -> list[str]:
    t = fp["train"]
    lines = [
        f"Written by `python -m pipeline init` for {a.train_images} (budget {a.budget}); its fingerprint is beside it.",
        f"Dataset: {t['count']} train images ({t['height']['q50']:.0f} x {t['width']['q50']:.0f} px median, {t['distinct_sizes']} distinct sizes), "
        f"{fp['test']['count']} test, {fp['channels']} channel(s), K = {fp['k']}, {fp['empty_share']:.0%} empty masks, "
        f"{fp['duplicates']['images']} images in duplicate groups.",
        f"Probe on {probe['cpu'].get('model', '?')} ({probe['cpu'].get('isa', '?')}, {probe['cpu'].get('cores', '?')} cores, {probe['device']}): "
        f"segmentation {1 / probe['seg_train']:.1f} inputs/s training, {1 / probe['seg_infer']:.1f} inference"
        + (f"; classifier {1 / probe['cls_train']:.1f} / {1 / probe['cls_infer']:.1f}" if probe["cls_train"] else "")
        + ".",
        f"Estimated stage times: {', '.join(f'{k} {v:.0f} s' for k, v in s.estimate.items())}.",
    ]
    if invert:
        lines.append(
            "The masks' foreground covered most of most images: read inverted (data.mask_invert), the 0 pixels are the foreground."
        )
    if not s.fits:
        lines.append("WARNING: the budget is smaller than the smallest plan; this one will run over it.")
    return lines


def _probe(plan: rules.Plan, data: dict, fp: dict, name: str) -> Probe:
    """The probe at the plan's settings; on a CPU with bf16 also in fp32, each network keeping
    the faster (bf16 autocast was slower than fp32 for the demo's small inputs: 137 vs 177 img/s)."""
    for key in ("segment.train.bf16", "classify.train.bf16"):
        plan.choices = [c for c in plan.choices if c.key != key]
    probe = run_probe(loader.load_dict(nested(plan, data), name), fp["channels"])
    if probe.device != "cpu" or not cpu_has_bf16():
        return probe
    trial = rules.Plan(list(plan.choices))
    trial.set("segment.train.bf16", "off", "")
    trial.set("classify.train.bf16", "off", "")
    fp32 = run_probe(loader.load_dict(nested(trial, data), name), fp["channels"])
    if fp32.seg_train < probe.seg_train:
        why = f"fp32 trained faster than bf16 autocast in the probe ({1 / fp32.seg_train:.0f} vs {1 / probe.seg_train:.0f} inputs/s)"
        plan.set("segment.train.bf16", "off", why)
        probe = replace(probe, seg_train=fp32.seg_train, seg_infer=fp32.seg_infer)
    if fp32.cls_train and fp32.cls_train < probe.cls_train:
        why = f"fp32 trained faster than bf16 autocast in the probe ({1 / fp32.cls_train:.0f} vs {1 / probe.cls_train:.0f} inputs/s)"
        plan.set("classify.train.bf16", "off", why)
        probe = replace(probe, cls_train=fp32.cls_train, cls_infer=fp32.cls_infer)
    return probe


def _sized(plan: rules.Plan, data: dict, fp: dict, seconds: float, name: str) -> tuple:
    """Probe the planned input, then cheaper ones until one fits the budget with every fold
    trained; failing that, the cheapest input with fewer folds. Returns the probe, the sizing
    and every probe's figures."""
    fallbacks = rules.smaller_inputs(fp, plan)
    probes = []
    for k in range(len(fallbacks) + 1):
        if k:
            rules.use_input(fp, plan, *fallbacks[k - 1])
        probe = _probe(plan, data, fp, name)
        last = k == len(fallbacks)
        sizing = budget.size(fp, plan, probe, seconds, fewer_folds=last)
        probes.append({"input": plan.get("segment.input"), **probe.to_dict(), "estimate_s": sizing.estimate["total"], "fits": sizing.fits})
        if sizing.fits and (last or sizing.folds_trained == plan.get("folds.n_folds")):
            return probe, sizing, probes
    return probe, sizing, probes


def init(a: InitArgs) -> dict:
    """Fingerprint, plan, probe, write; returns {config, fingerprint, plan}. Writes nothing when
    the dataset fails the ingest contract or an output exists."""
    out = Path(a.out)
    fp_path = out.with_name(out.stem + ".fingerprint.json")
    refuse_existing(out, fp_path)
    seconds = budget_seconds(a.budget)
    scan = scan_dataset(_sources(a))
    fp = fingerprint(scan, tuple(a.classes))
    invert = rules.orientation(fp)
    if invert:  # the fingerprint of the foreground the pipeline will train on
        scan = scan_dataset(_sources(a, invert=True))
        fp = fingerprint(scan, tuple(a.classes))
    arrays = {**scan.images, **scan.tests}
    fp |= {"duplicates": duplicates_summary(duplicate_groups(arrays), arrays), "inverted": invert}
    plan = rules.make_plan(fp, a.metric)
    plan.set("experiment.name", out.stem, "the config's name: its artifacts folder")
    data = _data_section(a, invert)
    probe, sizing, probes = _sized(plan, data, fp, seconds, out.stem)
    budget.apply(plan, sizing, seconds)
    fp |= {
        "probe": probe.to_dict(),
        "probes": probes,
        "budget_s": seconds,
        "estimate_s": sizing.estimate,
        "plan": {c.key: c.value for c in plan.choices},
    }
    text = render(plan, data, _header(a, fp, probe.to_dict(), sizing, invert))
    write_config(text, out)
    write_text(fp_path, json.dumps(fp, indent=2, default=str) + "\n")
    log.info("init: %s and %s", out, fp_path)
    return {"config": out, "fingerprint": fp_path, "plan": plan, "estimate": sizing.estimate}


def budget_seconds(text: str) -> float:
    value = parse_duration(text, "init --budget")
    if value <= 0:
        raise UserError(f"init --budget: {text!r} must be a positive duration")
    return value
