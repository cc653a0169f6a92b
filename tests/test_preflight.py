"""Augmentations and networks that cannot be built are refused before any stage runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import preflight
from pipeline.core.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def test_shipped_smoke_config_passes(smoke_cfg):
    preflight.check(smoke_cfg())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("segment.train.augment=[{name: HorizontalFlipp}]", "segment.train.augment: unknown albumentations transform 'HorizontalFlipp'"),
        (
            "classify.train.augment=[{name: RandomBrightnessContrast, brightness_limit: x}]",
            "classify.train.augment: RandomBrightnessContrast: ",
        ),
        ("segment.model.encoder=resnet999", "segment.model.encoder: Wrong encoder name `resnet999`"),
        ("segment.model.encoder=tu-resnet999", "segment.model: Unet with encoder 'tu-resnet999' cannot be built"),
    ],
)
def test_bad_augment_or_encoder_is_refused(smoke_cfg, override, expected):
    with pytest.raises(UserError, match="^" + expected.replace("[", r"\[")):
        preflight.check(smoke_cfg(override, "segment.model.encoder_weights=null"))


@pytest.mark.slow
def test_cli_refuses_before_running_anything(smoke_overrides, tmp_path):
    over = [a for o in smoke_overrides("segment.train.augment=[{name: Blurr}]", artifacts=tmp_path) for a in ("--set", o)]
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "all", "--config", str(REPO / "configs" / "smoke.yaml"), *over],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "Blurr" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # not even ingest ran


def test_a_single_oof_fold_is_refused_when_the_run_reaches_the_scorer(smoke_cfg):
    cfg = smoke_cfg("segment.train.folds=[0]")
    preflight.check(cfg, "segment")  # training one fold alone is fine
    with pytest.raises(UserError, match=r"^segment.train.folds: \[0\] gives OOF maps of one fold"):
        preflight.check(cfg, "all")
