"""Every path the pipeline derives lives here, so no other module hard-codes a location."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # pipeline/core/paths.py
CONFIG_DIR = REPO_ROOT / "configs"
BASE_CONFIG = CONFIG_DIR / "base.yaml"
DEMO_DIR = REPO_ROOT / "data" / "demo"
SUBMISSIONS_DIR = REPO_ROOT / "submissions"


def resolve(path: str | Path | None) -> Path | None:
    """Resolve a config path: relative paths are taken from the repository root, not the cwd."""
    if path is None or path == "":
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def experiment_dir(artifacts: str, experiment: str) -> Path:
    """Folder holding every stage's artifact folders for one experiment."""
    root = resolve(artifacts)
    assert root is not None
    return root / experiment


def stage_dir(artifacts: str, experiment: str, stage: str, key: str) -> Path:
    """Artifact folder of one stage at one key."""
    return experiment_dir(artifacts, experiment) / f"{stage}-{key}"


def fingerprint_memo(artifacts: str) -> Path:
    """Memo of input-file digests shared by every experiment under one artifacts root."""
    root = resolve(artifacts)
    assert root is not None
    return root / ".fingerprints.json"
