"""The per-step CV table printed at the end of run_all.sh, built from stage manifests."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import zoo
from pipeline.config.schema import Config
from pipeline.core import fileio, paths
from pipeline.engine import cache, tracking
from pipeline.engine.graph import Graph

Manifests = dict[str, tuple[dict, float | None]]
Steps = list[tuple[str, float | None, str]]  # (step, CV, how it was measured)


def stage_metrics(graph: Graph, cfg: Config, keys: dict[str, str] | None = None) -> Manifests:
    """{stage: (metrics, seconds)} from each stage's manifest at the config's key ({}, None when
    not done); `keys` memoises the keys, so the input files are fingerprinted once."""
    keys = {} if keys is None else keys
    out: Manifests = {}
    for stage in graph:
        m = cache.read_manifest(cache.stage_dir(graph, cfg, stage, graph.stage_key(cfg, stage, keys)))
        out[stage] = (m["metrics"], m["timings"]["seconds"]) if m else ({}, None)
    return out


def steps(graph: Graph, cfg: Config, manifests: Manifests | None = None) -> Steps:
    """(step, CV, how it was measured) in pipeline order."""
    ms = stage_metrics(graph, cfg) if manifests is None else manifests
    seg, cls, pseudo, ens, scorer = (ms[s][0] for s in ("segment", "classify", "pseudo", "ensemble", "scorer"))
    nested = scorer.get("nested_cv", {})
    metric = cfg.submit.metric
    # The ensemble stage scores its blend in TGS mAP; for another metric the scorer's
    # no-post-processing candidate on the blended OOF is the same step in that metric.
    ens_cv = ens.get("oof_tgs") if metric == "tgs" else nested.get("raw@0.5")
    return [
        ("raw segmentation @0.5", seg.get(f"oof_{metric}"), "OOF"),
        (
            "+ classifier gating",
            nested.get("gate_only"),
            f"nested CV, gate chosen on k-1 folds (AUC {cls.get('oof_auc', seg.get('oof_auc', 'n/a'))}{_class_aucs(cls if 'class_auc' in cls else seg)})",
        ),
        (
            "+ pseudo-labels",
            pseudo.get("oof_tgs") if pseudo.get("rounds") else None,
            "OOF after the last round" if pseudo.get("rounds") else "off (pseudo.rounds = 0)",
        ),
        (
            "+ ensemble",
            ens_cv,
            f"OOF of the blend {ens.get('models', [])}, weights per fold fitted on the other folds {list(ens.get('fold_weights', {}).values())}"
            + (", each defect's foreground read out to its winning class" if cfg.ensemble.readout == "foreground" else ""),
        ),
        ("+ grid post-processing", nested.get("grid"), "nested CV (threshold, min area, gate)"),
        ("+ LightGBM post-processing, one candidate", nested.get("global"), "nested CV, policy global"),
        ("+ LightGBM post-processing, per image", nested.get("per_image"), "nested CV, policy per_image"),
        *(
            [("+ grid per difficulty group", nested["difficulty"], "nested CV, policy difficulty (easy / medium / hard)")]
            if "difficulty" in nested
            else []
        ),
        (
            "= final (the submission's policy)",
            scorer.get("cv"),
            f"nested CV, policy {cfg.scorer.policy}" + (" (chosen on k-1 folds for each k)" if cfg.scorer.policy == "auto" else ""),
        ),
    ]


def _class_aucs(metrics: dict) -> str:
    """'; per class a 0.91, b 0.77' from a manifest's class_auc ('' for one binary class)."""
    aucs = metrics.get("class_auc")
    return "; per class " + ", ".join(f"{c} {v}" for c, v in aucs.items()) if aucs else ""


def per_class_lines(metric: str, seg: dict, scorer: dict, sub: dict) -> list[str]:
    """K classes: a row per class (raw OOF at 0.5, nested CV without and with the chosen
    post-processing, hidden-solution score) and their mean, the competition's metric; [] for
    one binary class."""
    final = scorer.get("per_class_cv")
    if not final:
        return []
    raw, hidden = seg.get("per_class", {}), sub.get("hidden_per_class", {})
    head = f"| class | images with it | raw OOF {metric} @0.5 | nested CV, none | nested CV, final | final where present | final FP rate where absent | all-empty | hidden test |"
    lines = ["", head, "|---|---|---|---|---|---|---|---|---|"]

    def show(v) -> str:
        return "-" if v is None else f"{v:.4f}"

    for name, row in final.items():
        cells = [
            raw.get(name, {}).get(metric),
            row.get("none"),
            row["cv"],
            row.get("present"),
            row.get("absent_fp"),
            row.get("all_empty"),
            hidden.get(name),
        ]
        lines.append(f"| {name} | {row.get('images', '-')} | {' | '.join(show(v) for v in cells)} |")
    mean = [
        seg.get(f"oof_{metric}"),
        scorer.get("nested_cv", {}).get("none"),
        scorer.get("cv"),
        None,
        None,
        scorer.get("all_empty_cv"),
        sub.get("hidden_score"),
    ]
    lines.append(f"| mean over (image, class) | - | {' | '.join(show(v) for v in mean)} |")
    return lines


def zoo_seconds(graph: Graph, cfg: Config) -> dict[str, float | None]:
    """{stage:model: seconds} of the zoo models (other configs' stages) the blend read."""
    out = {}
    for entry, (sub, stage) in zoo.upstream(cfg).items():
        if stage == zoo.DISTILL:  # the experiment's own stage, in the stage table already
            continue
        m = cache.read_manifest(cache.stage_dir(graph, sub, stage))
        out[entry if stage == zoo.PSEUDO else f"{stage}:{entry}"] = m["timings"]["seconds"] if m else None
    return out


def model_lines(ens: dict, student: dict) -> list[str]:
    """Several blended models: each one's OOF, the nested blend's and what it added over the
    best of them (paired over the same rows), and a distilled student against its teachers;
    [] for one model and no student."""
    per, gain = ens.get("oof_tgs_per_model", {}), ens.get("blend_gain")
    lines = ["", "| model | OOF tgs @0.5 |", "|---|---|"]
    if len(per) > 1 and gain:
        lines += [f"| {name} | {v:.4f} |" for name, v in per.items()]
        lines.append(f"| nested blend | {ens['oof_tgs']:.4f} ({gain['mean']:+.4f} ± {gain['se']:.4f} over {gain['over']}) |")
    if student.get("teachers"):
        d = student["student_minus_teachers"]
        lines.append(
            f"| teachers' nested blend {student['teachers']} | {student['teachers_oof_tgs']:.4f} ({student['teachers_img_per_s']} img/s) |"
        )
        lines.append(
            f"| distilled student | {student['oof_tgs']:.4f} ({d['mean']:+.4f} ± {d['se']:.4f}; {student['student_img_per_s']} img/s) |"
        )
    return lines if len(lines) > 3 else []


def seed_table_path(graph: Graph, cfg: Config, through: str = "submit", keys: dict[str, str] | None = None) -> Path:
    """Where `seeds` writes this config's seed-noise table (pipeline/engine/seeds.py): named by
    the key of its last stage at the config's own seed."""
    key = graph.stage_key(cfg, through, keys)
    return paths.experiment_dir(cfg.experiment.artifacts, cfg.experiment.name) / f"seeds-{key}.json"


def noise_marks(graph: Graph, cfg: Config, rows: Steps | None = None, keys: dict[str, str] | None = None) -> dict[str, float]:
    """{step: the sd over seeds of its gain} from the seed table of this config (through
    submit), for the steps whose gain here (`rows`: this run's steps) is smaller than that sd;
    {} without a table."""
    found = fileio.read_json(seed_table_path(graph, cfg, keys=keys))
    if not isinstance(found, dict):
        return {}
    here = {step: value for step, value, _ in (steps(graph, cfg) if rows is None else rows)}
    marks, previous = {}, None
    for row in found.get("steps", []):
        step = row["step"]
        if previous is not None and "gain_sd" in row and here.get(step) is not None and here.get(previous) is not None:
            if abs(here[step] - here[previous]) < row["gain_sd"]:
                marks[step] = row["gain_sd"]
        previous = step
    return marks


def build_report(graph: Graph, cfg: Config, save: bool = False) -> str:
    """Markdown table of CV per step and time per stage (saved next to the submission); a step
    whose gain is within the seed noise of a `seeds` table of this config is marked."""
    keys: dict[str, str] = {}
    ms = stage_metrics(graph, cfg, keys)
    rows = steps(graph, cfg, ms)
    noise = noise_marks(graph, cfg, rows, keys)
    lines = [f"## {cfg.experiment.name}: CV ({cfg.submit.metric}) per step", "", "| step | CV | measured as |", "|---|---|---|"]
    for name, value, how in rows:
        mark = f"; gain within seed noise (paired sd {noise[name]:.4f} over seeds)" if name in noise else ""
        lines.append(f"| {name} | {'-' if value is None else f'{value:.4f}'} | {how}{mark} |")
    scorer = ms["scorer"][0]
    lines += per_class_lines(cfg.submit.metric, ms["segment"][0], scorer, ms["submit"][0])
    lines += model_lines(ms["ensemble"][0], ms["distill"][0])
    if "grid_best_all_oof_score" in scorer:
        t, area, gate = scorer["grid_best_all_oof"]
        lines.append(
            f"\nfor comparison with one-split scripts (post-processing chosen and scored on the same"
            f" OOF, optimistic): {scorer['grid_best_all_oof_score']:.4f} at threshold {t}, min area {area:g}, gate {gate}"
        )
    sub = ms["submit"][0]
    if sub:
        lines.append(f"\nsubmission: {sub.get('file')} (policy {sub.get('policy')}, CV {sub.get('cv')})")
        if "hidden_score" in sub:
            lines.append(f"hidden test solution score: {sub['hidden_score']:.4f}")
    lines += ["", "| stage | seconds |", "|---|---|"]
    total = 0.0
    for name in graph:
        sec = ms[name][1]
        total += sec or 0.0
        lines.append(f"| {name} | {'-' if sec is None else f'{sec:.1f}'} |")
    for name, sec in zoo_seconds(graph, cfg).items():
        total += sec or 0.0
        lines.append(f"| {name} | {'-' if sec is None else f'{sec:.1f}'} |")
    lines.append(f"| total | {total:.1f} |")
    text = "\n".join(lines)
    if save:
        folder = cache.stage_dir(graph, cfg, "submit", graph.stage_key(cfg, "submit", keys))
        if folder.exists():
            fileio.write_text(folder / "report.md", text + "\n")
        tracking.log_report(cfg, rows, folder / "report.md")
    return text
