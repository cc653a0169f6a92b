"""Knowledge distillation (pipeline/training/distill.py, the distill stage): targets, config checks, and
the honesty rule: fold k's student learns only from fold k's teachers, on images outside fold k."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import zoo
from pipeline.config.teachers import DistillCfg
from pipeline.core.errors import ConfigError
from pipeline.core.store import ArrayStore
from pipeline.engine import cache
from pipeline.stages import GRAPH
from pipeline.training import distill

ZOO = "segment.models={fpn: {model: {arch: FPN}}}"


def test_temperature_softens_and_targets_mix_the_mask():
    p = np.array([0.02, 0.5, 0.9])
    np.testing.assert_allclose(distill.temper(p, 1.0), p, atol=1e-6)
    soft = distill.temper(p, 2.0)
    assert soft[0] > p[0] and soft[2] < p[2] and abs(soft[1] - 0.5) < 1e-6
    cfg = DistillCfg(True, [], "segment", 0.5, 1.0, True)
    hard = np.array([[True, False]])
    out = distill.target(np.array([[0.6, 0.6]]), hard, cfg)
    assert out.shape == (1, 2, 1) and out.dtype == np.uint8
    np.testing.assert_allclose(out[..., 0] / 255, [[0.8, 0.3]], atol=0.003)
    np.testing.assert_allclose(distill.target(np.array([[0.6]]), None, cfg)[..., 0] / 255, [[0.6]], atol=0.003)


def test_distill_config_problems(smoke_cfg):
    with pytest.raises(ConfigError, match=r"ensemble\.models\[1\]: got 'distill', which names no model"):
        smoke_cfg("ensemble.models=[segment, distill]")
    with pytest.raises(ConfigError, match=r"distill\.student: got 'fpm'"):
        smoke_cfg(ZOO, "distill.enabled=true", "distill.student=fpm")
    with pytest.raises(ConfigError, match=r"distill\.teachers\[0\]: got 'upp'"):
        smoke_cfg(ZOO, "distill.enabled=true", "distill.teachers=[upp]")
    with pytest.raises(ConfigError, match=r"distill\.enabled: the student learns one binary class"):
        smoke_cfg(
            "distill.enabled=true",
            "data.classes=[a, b]",
            "segment.target=multilabel",
            "classify.source=seg_head",
            "pseudo.rounds=0",
            "ensemble.models=[segment]",
        )


def test_distill_keys_follow_the_student_and_the_teachers(smoke_cfg, tmp_path):
    on = ["distill.enabled=true", "pseudo.rounds=0", "ensemble.models=[segment, fpn]"]
    base = smoke_cfg(ZOO, *on, artifacts=tmp_path)
    student = smoke_cfg(ZOO, *on, "distill.student=fpn", artifacts=tmp_path)
    teachers = smoke_cfg(ZOO, *on, "distill.teachers=[fpn]", artifacts=tmp_path)
    keys = {GRAPH.stage_key(c, "distill") for c in (base, student, teachers)}
    assert len(keys) == 3
    # Naming the student in the blend reads the distill stage: the blend's key follows it.
    blend = smoke_cfg(
        ZOO,
        "distill.enabled=true",
        "pseudo.rounds=0",
        "distill.teachers=[segment, fpn]",
        "ensemble.models=[segment, distill]",
        artifacts=tmp_path,
    )
    assert "distill" in zoo.upstream(blend) and GRAPH.stage_key(blend, "ensemble") != GRAPH.stage_key(base, "ensemble")
    # The teachers are hashed as resolved: named, or taken from ensemble.models, one student.
    named = smoke_cfg(ZOO, *on, "distill.teachers=[segment, fpn]", artifacts=tmp_path)
    alone = smoke_cfg(ZOO, *on[:2], "distill.teachers=[segment, fpn]", "ensemble.models=[distill]", artifacts=tmp_path)
    assert GRAPH.stage_key(named, "distill") == GRAPH.stage_key(base, "distill") == GRAPH.stage_key(alone, "distill")


@pytest.mark.slow
def test_a_fold_student_learns_from_its_fold_teachers_only(smoke_cfg, tmp_path, monkeypatch):
    cfg = smoke_cfg(
        ZOO,
        "distill.enabled=true",
        "pseudo.rounds=0",
        "classify.enabled=false",
        "distill.teachers=[segment, fpn]",
        "ensemble.models=[segment, distill]",
        artifacts=tmp_path,
    )
    seen = []
    real = distill.seg_test_maps

    def spy(model_cfg, paths, images, adabn=False):
        seen.append(([p.parent.name for p in paths], getattr(images, "positions", None), len(images)))
        return real(model_cfg, paths, images, adabn)

    monkeypatch.setattr(distill, "seg_test_maps", spy)
    folder, _ = cache.run_stage(GRAPH, cfg, "ensemble")
    dist_dir = cache.stage_dir(GRAPH, cfg, "distill")
    folds = __import__("pandas").read_csv(cache.stage_dir(GRAPH, cfg, "folds") / "folds.csv")
    images = ArrayStore(cache.stage_dir(GRAPH, cfg, "ingest"), "images")
    fold_of = {images.position(i): f for i, f in zip(folds["id"], folds["fold"], strict=True)}
    trained = [s for s in seen if len(s[0]) == 1]  # per-fold teacher maps (the speed check reads all folds)
    assert trained and all(len(set(names)) == 1 for names, _, _ in trained)
    for names, positions, _ in trained:
        k = int(names[0].removeprefix("fold"))
        if positions is not None:  # the student's training part: no image of fold k
            assert all(fold_of[int(p)] != k for p in positions)
    m = cache.read_manifest(dist_dir)["metrics"]
    assert m["teachers"] == ["segment", "fpn"] and m["student_img_per_s"] > 0 and "se" in m["student_minus_teachers"]
    assert len(ArrayStore(dist_dir, "oof")) == len(images)
    assert cache.read_manifest(folder)["metrics"]["models"] == ["segment", "distill"]
