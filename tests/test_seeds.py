"""The seed-noise report (pipeline/engine/seeds.py) on a graph of fake stages whose figures move with the seed."""

from __future__ import annotations

import pytest
from test_cache import _cfg

from pipeline.core.errors import UserError
from pipeline.engine import report, seeds
from pipeline.engine.graph import Graph, Stage
from pipeline.engine.report import build_report

CALLS: list[tuple[str, int]] = []
# The segmentation's OOF moves by a lot with the seed; the grid step adds a steady +0.02;
# per_image adds a gain smaller than its own spread over the seeds.
SEG = {42: 0.80, 43: 0.84, 44: 0.78}
PER_IMAGE_GAIN = {42: 0.001, 43: -0.004, 44: 0.005}


def _stage(name: str):
    def fn(ctx) -> dict:
        seed = ctx.cfg.experiment.seed
        CALLS.append((name, seed))
        seg = SEG[seed]
        return {
            "segment": {"oof_tgs": seg},
            "ensemble": {"oof_tgs": seg},
            "scorer": {
                "nested_cv": {"gate_only": seg, "grid": seg + 0.02, "global": seg + 0.02, "per_image": seg + 0.02 + PER_IMAGE_GAIN[seed]},
                "cv": seg + 0.02,
            },
        }.get(name, {})

    return fn


NAMES = ["classify", "segment", "pseudo", "distill", "ensemble", "scorer", "submit"]
FAKE = Graph({n: Stage(n, ("pseudo.rounds",), tuple(NAMES[:i]), _stage(n), doc="test") for i, n in enumerate(NAMES)})


def test_three_seeds_give_each_step_its_mean_and_spread(tmp_path):
    CALLS.clear()
    cfg = _cfg(tmp_path)
    table = seeds.run(FAKE, cfg, 3)
    assert table["seeds"] == [42, 43, 44]
    rows = {r["step"]: r for r in table["steps"]}
    raw = rows["raw segmentation @0.5"]
    assert raw["values"] == [0.80, 0.84, 0.78] and raw["mean"] == pytest.approx(0.8067, abs=1e-4)
    assert raw["sd"] == pytest.approx(0.0306, abs=1e-4)
    grid = rows["+ grid post-processing"]
    assert grid["gain_mean"] == pytest.approx(0.02) and grid["gain_sd"] == pytest.approx(0.0, abs=1e-12)
    assert "+ pseudo-labels" not in rows  # not measured under any seed
    assert report.seed_table_path(FAKE, cfg).exists()
    assert sorted({s for _, s in CALLS}) == [42, 43, 44] and len(CALLS) == 3 * len(NAMES)
    seeds.run(FAKE, cfg, 3)  # every seed's stages come from cache
    assert len(CALLS) == 3 * len(NAMES)
    assert "| + grid post-processing | 0.8200 | 0.8600 | 0.8000 | 0.8267 |" in seeds.format_table(table)


def test_the_report_marks_a_gain_smaller_than_its_seed_spread(tmp_path):
    cfg = _cfg(tmp_path)
    assert report.noise_marks(FAKE, cfg) == {}  # no seed table yet: no marks
    before = build_report(FAKE, cfg)
    assert "seed noise" not in before
    seeds.run(FAKE, cfg, 3)
    marks = report.noise_marks(FAKE, cfg)
    # per_image's gain at seed 42 (+0.001) is below the sd of its gain over the seeds (0.0045),
    # and so is the final step's back from it (-0.001); the grid's +0.02 is steady, so it stands.
    assert list(marks) == ["+ LightGBM post-processing, per image", "= final (the submission's policy)"]
    text = build_report(FAKE, cfg)
    line = next(t for t in text.splitlines() if t.startswith("| + LightGBM post-processing, per image"))
    assert "gain within seed noise (paired sd 0.0045 over seeds)" in line
    assert "seed noise" not in next(t for t in text.splitlines() if t.startswith("| + grid post-processing"))


def test_one_seed_or_an_unknown_stage_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(UserError, match="at least 2 seeds"):
        seeds.run(FAKE, cfg, 1)
    with pytest.raises(UserError, match="--through: unknown stage 'nope'"):
        seeds.run(FAKE, cfg, 2, "nope")
