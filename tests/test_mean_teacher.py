"""Mean teacher: the EMA teacher, the consistency loss, and the pseudo stage with it on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.config.teachers import MeanTeacherCfg
from pipeline.core.errors import ConfigError
from pipeline.core.store import ArrayStore, write_store
from pipeline.data.geometry import Geometry
from pipeline.engine import cache
from pipeline.modeling.models import build_segmentation
from pipeline.stages import GRAPH
from pipeline.training.loop import Fitter
from pipeline.training.mean_teacher import MeanTeacher
from pipeline.training.step import Task


def _quiet(_: str) -> None:
    pass


def _model(smoke_cfg):
    cfg = smoke_cfg()
    torch.manual_seed(0)
    return cfg, build_segmentation(cfg.segment.model, 1, aux=False)


def _store(tmp_path, n=6, size=40):
    rng = np.random.default_rng(0)
    write_store(tmp_path, "imgs", ((f"t{i}", rng.integers(0, 255, (size, size, 1), dtype=np.uint8)) for i in range(n)))
    return ArrayStore(tmp_path, "imgs")


def _teacher(tmp_path, cfg, **kw):
    mt = MeanTeacherCfg(
        **{"enabled": True, "weight": 1.0, "ema": 0.5, "batch_size": 4, "noise": 0.1, "final_teacher": False, "mutual": False, **kw}
    )
    return MeanTeacher(_store(tmp_path), Geometry("resize", 32), mt, cfg.segment, seed=3)


def test_teacher_is_an_ema_of_the_student(tmp_path, smoke_cfg):
    cfg, student = _model(smoke_cfg)
    mt = _teacher(tmp_path, cfg)
    mt.update(student)  # first update copies the student
    before = [p.detach().clone() for p in mt.teacher.module.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    mt.update(student)
    for old, new, s in zip(before, mt.teacher.module.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * s)  # ema 0.5


def test_consistency_loss_trains_the_student_only(tmp_path, smoke_cfg):
    cfg, student = _model(smoke_cfg)
    mt = _teacher(tmp_path, cfg)
    loss, parts = mt.loss(student)
    assert loss.item() > 0 and parts["consistency"] == pytest.approx(loss.item())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in mt.teacher.module.parameters())
    zero, _ = _teacher(tmp_path, cfg, weight=0.0).loss(student)
    assert zero.item() == 0.0


def test_fitter_calls_the_hook_loss_and_update(tmp_path, smoke_cfg):
    cfg, student = _model(smoke_cfg)
    calls = {"extra": 0, "after": 0}

    class Counting:
        def loss(self, model, batch, epoch):
            calls["extra"] += 1
            return sum(p.sum() for p in model.parameters()) * 0.0, {"x": 1.0}

        def update(self, model, opt):
            calls["after"] += 1

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

        def final_model(self):
            return None

    def loss(out, batch, epoch):
        return out["mask"].mean(), {}

    ds = [{"image": torch.randn(1, 32, 32), "mask": torch.zeros(1, 32, 32)} for _ in range(8)]
    tcfg = cfg.segment.train
    task = Task(loss=loss, validate=lambda m: {"score": 0.0}, hook=Counting())
    Fitter(student, task, tcfg, tmp_path / "fit", torch.device("cpu"), 0).fit(ds)
    steps = tcfg.epochs * (len(ds) // tcfg.batch_size)
    assert calls == {"extra": steps, "after": steps}


def test_config_checks(smoke_cfg):
    with pytest.raises(ConfigError, match="pseudo.mean_teacher: ema"):
        smoke_cfg("pseudo.mean_teacher.ema=1.0")
    with pytest.raises(ConfigError, match="batch_size"):
        smoke_cfg("pseudo.mean_teacher.batch_size=1")


@pytest.mark.slow
def test_pseudo_with_mean_teacher_changes_models_and_key(smoke_cfg, tmp_path):
    off = smoke_cfg(artifacts=tmp_path / "a")
    on = smoke_cfg("pseudo.mean_teacher.enabled=true", "pseudo.mean_teacher.batch_size=4", artifacts=tmp_path / "a")
    tweak_off = smoke_cfg("pseudo.mean_teacher.weight=3.0", artifacts=tmp_path / "a")
    assert GRAPH.stage_key(tweak_off, "pseudo") == GRAPH.stage_key(off, "pseudo")  # opt-in: off keeps keys
    assert GRAPH.stage_key(on, "pseudo") != GRAPH.stage_key(off, "pseudo")
    f_off, _ = cache.run_stage(GRAPH, off, "pseudo")
    f_on, ran = cache.run_stage(GRAPH, on, "pseudo")
    assert ran
    rounds = json.loads((f_on / "rounds.json").read_text())
    assert rounds[1]["mean_teacher"] is True
    history = (f_on / "round1" / "fold0" / "metrics.csv").read_text().splitlines()[0]
    assert "train_consistency" in history
    w_off = torch.load(f_off / "round1" / "fold0" / "model.pt", weights_only=True)
    w_on = torch.load(f_on / "round1" / "fold0" / "model.pt", weights_only=True)
    assert any(not torch.equal(w_off[k], w_on[k]) for k in w_off if w_off[k].is_floating_point())


@pytest.mark.slow
def test_pseudo_with_mutual_teachers_trains_a_peer(smoke_cfg, tmp_path):
    on = ["pseudo.mean_teacher.enabled=true", "pseudo.mean_teacher.batch_size=4"]
    single = smoke_cfg(*on, artifacts=tmp_path)
    mutual = smoke_cfg(*on, "pseudo.mean_teacher.mutual=true", artifacts=tmp_path)
    assert GRAPH.stage_key(mutual, "pseudo") != GRAPH.stage_key(single, "pseudo")
    assert GRAPH.stage_key(smoke_cfg("pseudo.mean_teacher.mutual=true", artifacts=tmp_path), "pseudo") == GRAPH.stage_key(
        smoke_cfg(artifacts=tmp_path), "pseudo"
    )
    folder, ran = cache.run_stage(GRAPH, mutual, "pseudo")
    history = (folder / "round1" / "fold0" / "metrics.csv").read_text().splitlines()[0]
    assert ran and {"train_consistency", "train_peer_loss", "train_peer_consistency"} <= set(history.split(","))


class _Stop(Exception):
    pass


def _fit_with_teacher(tmp_path, smoke_cfg, out, stop_after=None, **mt_kw):
    """Fine-tune with a mean teacher; `stop_after` interrupts after that epoch's checkpoint."""
    import dataclasses

    cfg, student = _model(smoke_cfg)
    mt = _teacher(tmp_path, cfg, **mt_kw)
    ds = [{"image": torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(i)), "mask": torch.zeros(1, 32, 32)} for i in range(8)]
    # SWA over the last epoch makes the final model the last weights (not a best-epoch pick).
    tcfg = dataclasses.replace(cfg.segment.train, epochs=3, swa_epochs=1)
    task = Task(
        loss=lambda o, b, e: (o["mask"].mean(), {}),
        validate=lambda m: {"score": 0.0},
        hook=mt,
    )

    def stop(epoch):
        if epoch == stop_after:
            raise _Stop

    Fitter(student, task, tcfg, out, torch.device("cpu"), 0).fit(ds, on_epoch_end=stop)
    return student, mt


@pytest.mark.slow
def test_resumed_fine_tuning_restores_the_teacher(tmp_path, smoke_cfg):
    whole, whole_mt = _fit_with_teacher(tmp_path, smoke_cfg, tmp_path / "whole")
    with pytest.raises(_Stop):
        _fit_with_teacher(tmp_path, smoke_cfg, tmp_path / "cut", stop_after=0)
    assert (tmp_path / "cut" / "checkpoint.pt").exists()
    resumed, resumed_mt = _fit_with_teacher(tmp_path, smoke_cfg, tmp_path / "cut")  # fresh objects, resumes at epoch 1
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(whole_mt.teacher.module.parameters(), resumed_mt.teacher.module.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_final_teacher_saves_the_teacher_and_both_scores(tmp_path, smoke_cfg):
    student, mt = _fit_with_teacher(tmp_path, smoke_cfg, tmp_path / "t", final_teacher=True)
    saved = torch.load(tmp_path / "t" / "model.pt", weights_only=True)
    teacher = mt.teacher.module.state_dict()
    assert all(torch.equal(saved[k], teacher[k]) for k in saved)
    swa_params = dict(student.named_parameters())  # the student, unlike the teacher, is not saved
    assert any(not torch.equal(saved[k], p.detach()) for k, p in swa_params.items())
    fit = json.loads((tmp_path / "t" / "fit.json").read_text())
    assert fit["final"] == "teacher" and {"teacher_score", "swa_score"} <= set(fit)
    _fit_with_teacher(tmp_path, smoke_cfg, tmp_path / "s")
    assert json.loads((tmp_path / "s" / "fit.json").read_text())["final"] == "swa"


def test_final_teacher_is_opt_in_within_the_mean_teacher_switch(smoke_cfg, tmp_path):
    def key(*over):
        return GRAPH.stage_key(smoke_cfg(*over, artifacts=tmp_path), "pseudo")

    on = "pseudo.mean_teacher.enabled=true"
    final = "pseudo.mean_teacher.final_teacher=true"
    assert key(final) == key()  # no mean teacher: the switch inside it is not hashed
    assert key(on, final) != key(on)


def _mutual(tmp_path, cfg, peer):
    from pipeline.training.mutual_teacher import MutualTeacher
    from pipeline.training.segmentation import seg_task

    mt = MeanTeacherCfg(True, 1.0, 0.5, 4, 0.1, False, True)
    return MutualTeacher(
        _store(tmp_path), Geometry("resize", 32), mt, cfg.segment, 3, peer=peer, supervised=seg_task(cfg.segment, None).loss
    )


def test_mutual_teacher_learns_the_peers_teacher_and_steps_the_peer(tmp_path, smoke_cfg):
    cfg, student = _model(smoke_cfg)
    torch.manual_seed(1)
    peer = build_segmentation(cfg.segment.model, 1, aux=True)  # other weights: the peer's teacher disagrees
    plain, mutual = _teacher(tmp_path / "a", cfg), _mutual(tmp_path / "b", cfg, peer)
    own, _ = plain.loss(student)  # same seed: the same unlabeled batch and noise
    before = [p.detach().clone() for p in mutual.peer.parameters()]
    against_peer, parts = mutual.loss(student, _labelled(), 0)
    assert against_peer.item() != pytest.approx(own.item()) and parts["peer_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, mutual.peer.parameters(), strict=True))  # the peer stepped
    mutual.update(student)
    assert not any(p is q for p, q in zip(mutual.peer.parameters(), peer.parameters(), strict=True))  # a copy
    # Resuming: the peer, its optimiser and its teacher come back from the checkpoint state.
    state = mutual.state_dict()
    again = _mutual(tmp_path / "c", cfg, build_segmentation(cfg.segment.model, 1, aux=True))
    again.load_state_dict(state)
    again._ready(student)
    for a, b in zip(mutual.peer.parameters(), again.peer.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(mutual.peer_teacher.parameters(), again.peer_teacher.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def _labelled():
    torch.manual_seed(2)
    x = torch.randn(2, 1, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.7).float()
    return {"image": x, "mask": mask, "dist": torch.zeros(2, 1, 32, 32), "label": mask.amax((1, 2, 3)), "coverage": mask.mean((1, 2, 3))}
