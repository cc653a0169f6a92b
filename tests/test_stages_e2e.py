"""The whole pipeline through `submit` on the smoke config, cache behaviour across config
changes, classifier on/off, pseudo-labels, and the post-processing helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import api
from pipeline.core import paths
from pipeline.core.store import ArrayStore, dequantise
from pipeline.data.tables import load_folds
from pipeline.engine import cache
from pipeline.engine.report import build_report, steps
from pipeline.evaluation.metrics import tgs_ap
from pipeline.inference.ensemble_io import EnsembleOutputs
from pipeline.postprocessing.masks import apply, candidate_scores, gate_masks
from pipeline.stages import GRAPH
from pipeline.training import segmentation

N_TRAIN, N_TEST = 48, 12


def _quiet(_: str) -> None:
    pass


def _run_all(cfg) -> dict[str, bool]:
    """Each stage in order; {stage: ran}."""
    return {name: cache.run_stage(GRAPH, cfg, name)[1] for name in GRAPH.stages}


@pytest.fixture(scope="module")
def full(smoke_cfg, tmp_path_factory):
    """Every stage of the smoke config, once for this module; returns (cfg, fake repo root)."""
    root = tmp_path_factory.mktemp("e2e_root")
    # Own artifacts: another module (the notebooks test) may already have cached `submit`
    # in the shared smoke artifacts, with its submission written elsewhere.
    cfg = smoke_cfg(artifacts=root / "artifacts")
    with pytest.MonkeyPatch.context() as mp:
        # See conftest.submissions_dir for why REPO_ROOT moves too.
        mp.setattr(paths, "SUBMISSIONS_DIR", root / "submissions")
        mp.setattr(paths, "REPO_ROOT", root)
        _run_all(cfg)
    return cfg, root


def _test_ids_sorted(smoke_data: Path) -> list[str]:
    return sorted(p.stem for p in (smoke_data / "test" / "images").iterdir())


# ----------------------------------------------------------------------------- whole pipeline


@pytest.mark.slow
def test_all_stages_done_and_submission_valid(full, smoke_data):
    cfg, root = full
    assert {state for _, state, _ in cache.status(GRAPH, cfg)} == {"done"}
    sub_dir = cache.load_upstream(GRAPH, cfg, "submit")
    metrics = cache.read_manifest(sub_dir)["metrics"]
    csv = root / metrics["file"]
    assert csv.parent == root / "submissions" and csv.is_file()
    assert csv.read_bytes() == (sub_dir / "submission.csv").read_bytes()

    sub = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(sub.columns) == ["id", cfg.submit.rle_column]
    expected = _test_ids_sorted(smoke_data)
    assert len(expected) == N_TEST
    assert sub["id"].tolist() == expected
    assert ArrayStore(cache.load_upstream(GRAPH, cfg, "ingest_test"), "test_images").ids == expected
    assert metrics["rows"] == N_TEST

    score, n = api.score_submission(csv, smoke_data / "test_solution" / "masks")
    assert isinstance(score, float) and 0.0 <= score <= 1.0 and n == N_TEST
    assert metrics["hidden_score"] == pytest.approx(score, abs=1e-4)


@pytest.mark.slow
def test_cached_run_fingerprints_inputs_once(full, monkeypatch):
    # Keys memoised across one `all` run and one report: the input files are fingerprinted once
    # per input set (train, test), not once per path through the stage graph.
    from pipeline.stages import reads

    cfg, _ = full
    calls = []
    real = reads.fingerprint

    def counting(*entries, **kw):
        calls.append(entries)
        return real(*entries, **kw)

    monkeypatch.setattr(reads, "fingerprint", counting)
    keys: dict = {}
    assert not any(cache.run_stage(GRAPH, cfg, name, keys=keys)[1] for name in GRAPH.stages)
    assert len(calls) == 2
    calls.clear()
    build_report(GRAPH, cfg)
    assert len(calls) == 2


@pytest.mark.slow
def test_report_has_every_step(full):
    cfg, _ = full
    text = build_report(GRAPH, cfg)
    values = {name: value for name, value, _ in steps(GRAPH, cfg)}
    for name in values:
        assert f"| {name} |" in text
    for name in (
        "raw segmentation @0.5",
        "+ classifier gating",
        "+ pseudo-labels",
        "+ ensemble",
        "+ grid post-processing",
        "+ LightGBM post-processing, one candidate",
        "+ LightGBM post-processing, per image",
        "= final (the submission's policy)",
    ):
        assert values[name] is not None and 0.0 <= values[name] <= 1.0, name
    for stage in GRAPH.stages:
        assert f"| {stage} |" in text
    assert "hidden test solution score:" in text
    scorer = cache.read_manifest(cache.stage_dir(GRAPH, cfg, "scorer"))["metrics"]
    optimistic = scorer["grid_best_all_oof_score"]
    assert f"optimistic): {optimistic:.4f}" in text
    # the in-sample best candidate is at least the no-post-processing candidate, one of the grid's
    assert optimistic >= scorer["nested_cv"]["raw@0.5"] - 1e-4
    assert cfg.scorer.policy == "auto" and scorer["cv"] == scorer["nested_cv"]["auto"]


@pytest.mark.slow
def test_second_run_is_fully_cached(full, submissions_dir):
    cfg, _ = full
    folder, ran = cache.run_stage(GRAPH, cfg, "submit")
    assert not ran and folder == cache.load_upstream(GRAPH, cfg, "submit")
    assert not any(_run_all(cfg).values())
    assert [state for _, state, _ in cache.status(GRAPH, cfg)] == ["done"] * len(GRAPH.stages)
    assert not submissions_dir.exists()  # nothing rewritten


@pytest.mark.slow
def test_changing_min_areas_reruns_only_scorer_and_submit(full, smoke_cfg, submissions_dir):
    cfg, _ = full
    changed = smoke_cfg("scorer.min_areas=[0, 30]", artifacts=Path(cfg.experiment.artifacts))
    before = {name: key for name, _, key in cache.status(GRAPH, cfg)}
    after = {name: key for name, _, key in cache.status(GRAPH, changed)}
    assert {n for n in before if before[n] != after[n]} == {"scorer", "submit"}
    ran = _run_all(changed)
    assert {n for n, r in ran.items() if r} == {"scorer", "submit"}
    policy = json.loads((cache.load_upstream(GRAPH, changed, "scorer") / "policy.json").read_text())
    assert policy["n_candidates"] == 2 * 2 * 2
    assert len(list(submissions_dir.glob("*.csv"))) == 1


@pytest.mark.slow
def test_policy_none_submits_the_raw_maps(full, smoke_cfg, submissions_dir):
    cfg, _ = full
    art = Path(cfg.experiment.artifacts)
    folder, _ = cache.run_stage(GRAPH, smoke_cfg("scorer.policy=none", artifacts=art), "scorer")
    params = pd.read_csv(folder / "test_params.csv")
    assert (params["threshold"] == 0.5).all() and (params["min_area"] == 0).all() and (params["gate"] == 0).all()
    policy = json.loads((folder / "policy.json").read_text())
    assert policy["policy"] == "none" and policy["nested_cv"]["none"] == policy["nested_cv"]["raw@0.5"]
    # auto picks none exactly when no other policy beats it out of sample (ties go to none)
    auto = json.loads((cache.load_upstream(GRAPH, cfg, "scorer") / "policy.json").read_text())
    others = max(auto["nested_cv"][p] for p in ("grid", "global", "per_image"))
    assert (auto["policy"] == "none") == (auto["nested_cv"]["none"] >= others)


@pytest.mark.slow
def test_submit_outside_repo_root(full, tmp_path, monkeypatch):
    cfg, _ = full
    monkeypatch.setattr(paths, "SUBMISSIONS_DIR", tmp_path / "subs")
    folder, ran = cache.run_stage(GRAPH, cfg, "submit", force=True)
    assert ran and list((tmp_path / "subs").glob("*.csv"))


# ----------------------------------------------------------------------------- classifier


@pytest.mark.slow
def test_classify_outputs(full):
    cfg, _ = full
    folder = cache.load_upstream(GRAPH, cfg, "classify")
    oof = pd.read_csv(folder / "oof_cls.csv", dtype={"id": str})
    ingest = cache.load_upstream(GRAPH, cfg, "ingest")
    assert oof["id"].tolist() == ArrayStore(ingest, "images").ids
    assert oof["prob"].notna().all() and oof["prob"].between(0, 1).all()
    folds = load_folds(cache.load_upstream(GRAPH, cfg, "folds")).set_index("id")
    assert (oof["fold"].to_numpy() == folds.loc[oof["id"], "fold"].to_numpy()).all()
    train = pd.read_csv(ingest / "train.csv", dtype={"id": str}).set_index("id")
    assert (oof["label"].to_numpy() == (train.loc[oof["id"], "coverage"].to_numpy() > 0)).all()
    assert (folder / "roc.png").stat().st_size > 0
    table = pd.read_csv(folder / "roc_table.csv")
    assert list(table.columns) == ["threshold", "tpr", "fpr"] and len(table) > 0
    assert table[["tpr", "fpr"]].apply(lambda c: c.between(0, 1)).all().all()
    metrics = cache.read_manifest(folder)["metrics"]
    assert metrics["enabled"] is True and set(metrics["fold_auc"]) == {"fold0", "fold1"}
    # The ensemble carries the same OOF probabilities.
    ens = pd.read_csv(cache.load_upstream(GRAPH, cfg, "ensemble") / "oof_cls.csv", dtype={"id": str})
    np.testing.assert_allclose(ens["prob"], oof.set_index("id").loc[ens["id"], "prob"])


@pytest.mark.slow
def test_classify_disabled_gives_nan_probs_and_never_gates(full, smoke_cfg):
    base, _ = full
    cfg = smoke_cfg("classify.enabled=false", artifacts=Path(base.experiment.artifacts))
    ran = {name: cache.run_stage(GRAPH, cfg, name)[1] for name in ("segment", "classify", "ensemble")}
    assert ran == {"segment": False, "classify": True, "ensemble": True}
    assert cache.stage_dir(GRAPH, cfg, "segment") == cache.stage_dir(GRAPH, base, "segment")
    ens_dir = cache.load_upstream(GRAPH, cfg, "ensemble")
    oof_cls = pd.read_csv(ens_dir / "oof_cls.csv", dtype={"id": str})
    test_cls = pd.read_csv(ens_dir / "test_cls.csv", dtype={"id": str})
    assert len(oof_cls) == N_TRAIN and oof_cls["prob"].isna().all()
    assert len(test_cls) == N_TEST and test_cls["prob"].isna().all()

    ens = EnsembleOutputs(ens_dir, cache.load_upstream(GRAPH, cfg, "ingest"), cache.load_upstream(GRAPH, cfg, "ingest_test"))
    assert np.isnan(ens.test_cls).all()
    for prob, cls in zip(ens.test_probs(), ens.test_cls, strict=True):
        for gate in (0.0, 0.5, 1.0):
            np.testing.assert_array_equal(apply(prob, cls, 0.5, 0, gate), prob > 0.5)
    # The scorer's candidates agree: with NaN probabilities every gate scores like no gate.
    cands, scores = candidate_scores(ens.truths(), ens.oof_probs(), ens.oof_cls, [0.5], [0], [0.0, 0.5, 1.0])
    assert np.array_equal(scores[:, 0], scores[:, 1]) and np.array_equal(scores[:, 0], scores[:, 2])


# ----------------------------------------------------------------------------- pseudo-labels


@pytest.mark.slow
def test_pseudo_round_labels_only_test_ids(full, smoke_cfg):
    # Loose selection so that the round really trains on pseudo-labelled images.
    cfg = smoke_cfg("pseudo.min_confident_share=0.0", "pseudo.prob_lo=1.0", "pseudo.max_images=5")
    folder, ran = cache.run_stage(GRAPH, cfg, "pseudo")
    assert ran
    rounds = json.loads((folder / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[1]["selected"] == {"fold0": 5, "fold1": 5}
    labels = ArrayStore(folder / "round1" / "fold0", "pseudo_masks")
    assert len(labels.ids) == 5
    test_ids = set(ArrayStore(cache.load_upstream(GRAPH, cfg, "ingest_test"), "test_images").ids)
    train_ids = ArrayStore(cache.load_upstream(GRAPH, cfg, "ingest"), "images").ids
    folds = load_folds(cache.load_upstream(GRAPH, cfg, "folds"))
    assert set(labels.ids) <= test_ids
    assert not set(labels.ids) & set(folds["id"])
    assert set(folds["id"]) == set(train_ids)
    assert all(labels.get(i).shape == (101, 101, 1) and labels.get(i).max() <= 1 for i in labels.ids)
    oof = ArrayStore(folder / "round1", "oof")
    assert oof.ids == train_ids
    assert (folder / "final").resolve() == (folder / "round1").resolve()
    assert sorted(p.parent.name for p in (folder / "round1").glob("fold*/model.pt")) == ["fold0", "fold1"]
    metrics = cache.read_manifest(folder)["metrics"]
    assert metrics["rounds"] == 1 and metrics["history"][1]["selected"]["fold1"] == 5


@pytest.mark.slow
def test_pseudo_labels_of_a_fold_come_from_that_fold_s_model_alone(full, smoke_cfg):
    # Every other fold's model trained on this fold's validation images: labels from the fold
    # average would leak their labels into this fold's OOF score after fine-tuning.
    cfg = smoke_cfg("pseudo.min_confident_share=0.0", "pseudo.prob_lo=1.0", "pseudo.max_images=5", "pseudo.soft=true")
    folder, _ = cache.run_stage(GRAPH, cfg, "pseudo")
    seg_dir = cache.load_upstream(GRAPH, cfg, "segment")
    test = ArrayStore(cache.load_upstream(GRAPH, cfg, "ingest_test"), "test_images")
    own = segmentation.predict_test(cfg, seg_dir, test, folds=[0]).masks
    average = segmentation.predict_test(cfg, seg_dir, test).masks
    labels = ArrayStore(folder / "round1" / "fold0", "pseudo_masks")
    for i in labels.ids:
        got = dequantise(labels.get(i)[..., 0])
        np.testing.assert_allclose(got, own[test.position(i)], atol=0.003)
        assert np.abs(got - average[test.position(i)]).max() > 0.01


@pytest.mark.slow
def test_smoke_pseudo_round_records_selected_count(full):
    cfg, _ = full
    folder = cache.load_upstream(GRAPH, cfg, "pseudo")
    rounds = json.loads((folder / "rounds.json").read_text())
    assert len(rounds) == cfg.pseudo.rounds + 1
    for fold in ("fold0", "fold1"):
        assert rounds[1]["selected"][fold] == len(ArrayStore(folder / "round1" / fold, "pseudo_masks").ids)
    assert ArrayStore(folder / "round1", "oof").ids == ArrayStore(cache.load_upstream(GRAPH, cfg, "ingest"), "images").ids


# ----------------------------------------------------------------------------- post-processing


def test_gate_masks_empties_exactly_below_gate():
    rng = np.random.default_rng(0)
    masks = [rng.random((5, 7)) > 0.5 for _ in range(5)]
    probs = np.array([0.1, 0.5, 0.49, 0.9, 0.0])
    out = gate_masks(probs, 0.5, masks)
    for p, m, o in zip(probs, masks, out, strict=True):
        assert o.shape == m.shape and o.dtype == m.dtype
        np.testing.assert_array_equal(o, np.zeros_like(m) if p < 0.5 else m)
    assert all(np.array_equal(o, m) for o, m in zip(gate_masks(probs, 0.0, masks), masks, strict=True))


def test_gate_masks_nan_never_gates():
    mask = np.ones((4, 4), bool)
    (out,) = gate_masks(np.array([np.nan]), 0.5, [mask])
    np.testing.assert_array_equal(out, mask)


def test_candidate_scores_match_direct_metric():
    rng = np.random.default_rng(1)
    shapes = [(20, 20), (20, 20), (15, 30), (20, 20), (10, 10), (25, 25)]
    truths = [rng.random(s) > 0.6 for s in shapes]
    truths[3][:] = False  # an empty truth
    probs = [np.clip(t * 0.7 + rng.random(t.shape) * 0.5, 0, 1) for t in truths]
    probs[4] = rng.random(shapes[4]) * 0.35  # nothing above 0.4
    cls = np.array([0.9, 0.2, np.nan, 0.6, 0.4, 0.55])
    thresholds, min_areas, gates = [0.4, 0.6], [0, 60], [0.0, 0.5]
    cands, scores = candidate_scores(truths, probs, cls, thresholds, min_areas, gates)
    assert cands.shape == (8, 3) and scores.shape == (len(truths), 8)
    assert {tuple(c) for c in cands} == {(t, a, g) for t in thresholds for a in min_areas for g in gates}
    for j, (t, a, g) in enumerate(cands):
        direct = [tgs_ap(truth, apply(p, c, t, int(a), g)) for truth, p, c in zip(truths, probs, cls, strict=True)]
        np.testing.assert_allclose(scores[:, j], direct, err_msg=f"candidate {(t, a, g)}")
    assert len({tuple(col) for col in scores.T}) > 1  # the candidates really differ
