"""The seed-noise report: a config run with N seeds, each step's CV as mean and standard
deviation over the seeds, so that a gain smaller than the seed-to-seed spread is seen as noise.

Seed s is `experiment.seed` + s (s = 0 is the config's own run, reused from cache when done).
Every stage key hashes the seed, so each other seed is a run of its own, with its own folders,
and a rerun of the command reads them all from cache. The table is written as
`<artifacts>/<experiment>/seeds-<key>.json` (key: the last stage's key at the config's own seed;
`report.seed_table_path`), where the CV report finds it and marks each step whose gain over the
step before it is smaller than the spread of that gain over the seeds (`report.noise_marks`)."""

from __future__ import annotations

import dataclasses
import json
import statistics

from pipeline.config.schema import Config
from pipeline.core import fileio
from pipeline.core.errors import UserError
from pipeline.engine import cache, report
from pipeline.engine.graph import Graph


def with_seed(cfg: Config, seed: int) -> Config:
    return dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment, seed=seed))


def _stages_through(graph: Graph, through: str) -> list[str]:
    names = list(graph)
    if through not in names:
        raise UserError(f"--through: unknown stage {through!r}; valid stages: {', '.join(names)}")
    return names[: names.index(through) + 1]


def run(graph: Graph, cfg: Config, n: int, through: str = "submit") -> dict:
    """Run every stage through `through` with n seeds; returns (and writes) the table
    {"seeds": [...], "steps": [{"step", "values", "mean", "sd", "gain_sd"}]}."""
    if n < 2:
        raise UserError(f"--n: a spread needs at least 2 seeds, got {n}")
    seeds = [cfg.experiment.seed + s for s in range(n)]
    per_seed = []
    for seed in seeds:
        seeded, keys = with_seed(cfg, seed), {}
        for name in _stages_through(graph, through):
            cache.run_stage(graph, seeded, name, keys=keys)
        per_seed.append(dict((step, value) for step, value, _ in report.steps(graph, seeded)))
    table = {"seeds": seeds, "through": through, "steps": _rows(per_seed)}
    fileio.write_text(report.seed_table_path(graph, cfg, through), json.dumps(table, indent=1) + "\n")
    return table


def _rows(per_seed: list[dict[str, float | None]]) -> list[dict]:
    """Each step measured under every seed: its values, mean, sd, and the sd over the seeds of
    its gain over the step before it (paired within each seed)."""
    rows, previous = [], None
    for step in per_seed[0]:
        values = [run[step] for run in per_seed]
        if any(v is None for v in values):
            continue
        row = {"step": step, "values": values, "mean": statistics.fmean(values), "sd": statistics.stdev(values)}
        if previous is not None:
            row["gain_sd"] = statistics.stdev([v - p for v, p in zip(values, previous["values"], strict=True)])
            row["gain_mean"] = row["mean"] - previous["mean"]
        rows.append(row)
        previous = row
    return rows


def format_table(table: dict) -> str:
    seeds = table["seeds"]
    head = "| step | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd | gain (paired sd) |"
    lines = [head, "|---" * (len(seeds) + 4) + "|"]
    for row in table["steps"]:
        gain = f"{row['gain_mean']:+.4f} ({row['gain_sd']:.4f})" if "gain_sd" in row else ""
        values = " | ".join(f"{v:.4f}" for v in row["values"])
        lines.append(f"| {row['step']} | {values} | {row['mean']:.4f} | {row['sd']:.4f} | {gain} |")
    return "\n".join(lines)
