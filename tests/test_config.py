"""Tests for YAML -> typed config: merging, overrides, and one-line errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import loader as config
from pipeline.config import typed
from pipeline.config.blocks import LossPhase, TrainCfg
from pipeline.config.schema import Config
from pipeline.core import paths
from pipeline.core.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "configs" / "demo.yaml"
BASE = REPO / "configs" / "base.yaml"


def _exp(tmp_path: Path, body: dict | str, name: str = "exp.yaml", base: Path | None = BASE) -> Path:
    """Write an experiment YAML on top of base.yaml (absolute path) into tmp_path."""
    path = tmp_path / name
    text = body if isinstance(body, str) else (yaml.safe_dump(body) if body else "")
    head = f"base: {base}\n" if base is not None else ""
    path.write_text(head + text)
    return path


def _error(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(path, overrides)
    msg = str(info.value)
    assert "\n" not in msg, f"error must be one line: {msg!r}"
    assert msg.strip() == msg and msg
    return msg


# ----------------------------------------------------------------------------- loading


def test_demo_config_is_typed():
    cfg = config.load(DEMO)
    assert isinstance(cfg, Config)
    assert cfg.experiment.name == "demo"
    assert cfg.source == str(DEMO)
    train = cfg.segment.train
    assert isinstance(train, TrainCfg)
    assert type(train.epochs) is int and train.epochs == 6
    assert type(train.lr) is float
    assert type(train.channels_last) is bool
    assert all(isinstance(p, LossPhase) for p in train.loss)
    assert [p.until_epoch for p in train.loss] == [4, 0]
    assert train.loss[0].terms == {"bce": 1.0, "dice": 1.0}
    assert all(type(v) is float for p in train.loss for v in p.terms.values())
    # demo.yaml overrides only some keys; the rest merge from base.yaml
    assert cfg.folds.n_folds == 3 and cfg.folds.coverage_bins == 10
    assert cfg.segment.input.mode == "resize" and cfg.segment.input.size == 64
    assert cfg.segment.input.tile_overlap == 32  # from base, sibling of overridden keys
    assert cfg.classify.train.epochs == 4 and cfg.classify.train.batch_size == 64
    assert cfg.data.metadata == ["data/demo/metadata.csv"]
    assert cfg.data.train_rle_csv is None
    assert cfg.segment.model.encoder_weights == "lite"


def test_base_config_loads_and_name_defaults_to_stem():
    cfg = config.load(BASE)
    assert cfg.experiment.name == "base"
    assert cfg.folds.n_folds == 5


def test_experiment_name_from_file_stem_unless_set(tmp_path):
    assert config.load(_exp(tmp_path, {}, "my_run.yaml")).experiment.name == "my_run"
    cfg = config.load(_exp(tmp_path, {"experiment": {"name": "custom"}}, "other.yaml"))
    assert cfg.experiment.name == "custom"


def test_base_chain_merges_deeply(tmp_path):
    parent = _exp(tmp_path, {"segment": {"train": {"epochs": 7, "lr": 0.01}}}, "parent.yaml")
    child = _exp(tmp_path, {"segment": {"train": {"epochs": 9}}}, "child.yaml", base=parent)
    cfg = config.load(child)
    assert cfg.segment.train.epochs == 9  # child wins
    assert cfg.segment.train.lr == 0.01  # from parent
    assert cfg.segment.train.batch_size == 32  # from base.yaml
    # a relative `base` is resolved from the experiment file's folder
    rel = tmp_path / "rel.yaml"
    rel.write_text("base: parent.yaml\n")
    assert config.load(rel).segment.train.epochs == 7


def test_default_base_outside_configs_dir(tmp_path):
    path = tmp_path / "nobase.yaml"
    path.write_text("folds: {n_folds: 4}\n")
    cfg = config.load(path)
    assert cfg.folds.n_folds == 4 and cfg.segment.train.epochs == 12


def test_lists_replace_rather_than_merge(tmp_path):
    cfg = config.load(_exp(tmp_path, {"segment": {"train": {"tta": ["none"]}}}))
    assert cfg.segment.train.tta == ["none"]


def test_overrides_change_values_and_types():
    cfg = config.load(DEMO, ["segment.train.epochs=3", "data.metadata=[a.csv,b.csv]"])
    assert cfg.segment.train.epochs == 3 and type(cfg.segment.train.epochs) is int
    assert cfg.data.metadata == ["a.csv", "b.csv"]
    cfg = config.load(
        DEMO,
        [
            "segment.train.lr=1",  # int is accepted for a float and converted
            "segment.train.channels_last=false",
            "data.channels=3",
            "data.test_images=null",
            "experiment.name=ovr",
            "folds.group_column=z",
            "segment.train.oversample={empty: 0.5, small: 3}",
        ],
    )
    assert cfg.segment.train.lr == 1.0 and type(cfg.segment.train.lr) is float
    assert cfg.segment.train.channels_last is False
    assert cfg.data.channels == 3
    assert cfg.data.test_images is None
    assert cfg.experiment.name == "ovr"
    assert cfg.folds.group_column == "z"
    # a mapping override merges into the existing mapping
    assert cfg.segment.train.oversample == {"empty": 0.5, "small": 3.0, "medium": 1.0, "large": 1.0}
    # the demo file itself is untouched by overrides: loading again gives its values
    assert config.load(DEMO).segment.train.epochs == 6


def test_later_override_wins():
    cfg = config.load(DEMO, ["segment.train.epochs=3", "segment.train.epochs=5"])
    assert cfg.segment.train.epochs == 5


def test_parse_override():
    assert config.parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    assert config.parse_override("a=x=y") == {"a": "x=y"}
    assert config.parse_override("a=") == {"a": ""}
    assert config.parse_override("a=[1, 2]") == {"a": [1, 2]}


@pytest.mark.parametrize("text", ["segment.train.epochs", "segment..epochs=3", "=3"])
def test_bad_override_syntax(text):
    msg = _error(DEMO, [text])
    assert "--set" in msg


def test_dump_round_trips(tmp_path):
    cfg = config.load(DEMO, ["segment.train.epochs=2"])
    text = config.dump(cfg)
    path = tmp_path / "dumped.yaml"
    path.write_text(f"base: {BASE}\n" + text)
    again = config.load(path)
    assert again == cfg
    assert again.source == str(path) and cfg.source == str(DEMO)
    assert typed.to_dict(again) == typed.to_dict(cfg)
    assert "source" not in typed.to_dict(cfg)


def test_section_and_to_dict():
    cfg = config.load(DEMO)
    assert typed.section(cfg, "segment.train.epochs") == 6
    train = typed.section(cfg, "segment.train")
    assert isinstance(train, dict) and train["loss"][0]["until_epoch"] == 4
    assert typed.section(cfg, "folds") == {
        "n_folds": 3,
        "coverage_bins": 10,
        "group_column": None,
        "mosaic": {"enabled": False, "margin": 0.8},
        "seed": 42,
        "clusters": False,
        "duplicates": False,
        "stratify": "coverage",
    }


# ----------------------------------------------------------------------------- unknown keys


def test_unknown_key_in_yaml_names_dotted_key_and_closest(tmp_path):
    msg = _error(_exp(tmp_path, {"segment": {"train": {"epoch": 3}}}))
    assert "segment.train.epoch" in msg
    assert "'epochs'" in msg


def test_unknown_top_level_key(tmp_path):
    msg = _error(_exp(tmp_path, {"segmnet": {"train": {"epochs": 3}}}))
    assert "'segmnet'" in msg and "'segment'" in msg


def test_unknown_key_in_list_item(tmp_path):
    body = {"segment": {"train": {"loss": [{"until_epoch": 0, "term": {"bce": 1.0}}]}}}
    msg = _error(_exp(tmp_path, body))
    assert "segment.train.loss[0].term" in msg and "'terms'" in msg


def test_unknown_override_key():
    msg = _error(DEMO, ["segment.train.epoch=3"])
    assert "segment.train.epoch" in msg and "'epochs'" in msg
    msg = _error(DEMO, ["data.metdata=[a.csv]"])
    assert "data.metdata" in msg and "'metadata'" in msg


def test_config_error_is_user_error():
    assert issubclass(ConfigError, UserError)


# ----------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("segment.train.epochs=abc", "segment.train.epochs", "int"),
        ("segment.train.epochs=1.5", "segment.train.epochs", "int"),
        ("segment.train.epochs=true", "segment.train.epochs", "int"),  # bool is not an int here
        ("segment.train.lr=[1]", "segment.train.lr", "float"),
        ("segment.train.lr=true", "segment.train.lr", "float"),
        ("segment.train.channels_last=1", "segment.train.channels_last", "bool"),
        ("experiment.seed=no", "experiment.seed", "int"),
        ("data.train_masks=5", "data.train_masks", "str"),
        ("data.metadata=a.csv", "data.metadata", "list"),
        ("data.metadata=[1]", "data.metadata[0]", "str"),
        ("segment.train.oversample=[1]", "segment.train.oversample", "mapping"),
        ("segment.train.oversample.empty=x", "segment.train.oversample.empty", "float"),
        ("segment.train=3", "segment.train", "mapping"),
        ("segment.train.loss=[{until_epoch: x, terms: {}}]", "segment.train.loss[0].until_epoch", "int"),
    ],
)
def test_wrong_type_names_key_and_expected_type(override, key, expected):
    msg = _error(DEMO, [override])
    assert msg.startswith(f"{key}:"), msg
    assert expected in msg


def test_wrong_type_in_yaml(tmp_path):
    msg = _error(_exp(tmp_path, {"folds": {"n_folds": "five"}}))
    assert msg.startswith("folds.n_folds:") and "int" in msg


def test_bool_rejected_for_union_int():
    msg = _error(DEMO, ["data.channels=true"])
    assert "data.channels" in msg


@pytest.mark.parametrize("value", ["3.0", "[1]"])
def test_union_type_error_names_both_types(value):
    msg = _error(DEMO, [f"data.channels={value}"])
    assert msg.startswith("data.channels:") and "str | int" in msg


def test_null_section_is_reported():
    msg = _error(DEMO, ["experiment=null"])
    assert msg.startswith("experiment:") and "mapping" in msg


def test_missing_key_is_reported(tmp_path):
    path = tmp_path / "nobase.yaml"
    path.write_text(
        "base: null\nexperiment: {name: x, seed: 1, artifacts: a, device: cpu, threads: 0, deterministic: false, compile: false, batch_tta: false, tracking: false, tracking_uri: ''}\n"
    )
    msg = _error(path)
    assert "missing key 'data'" in msg


def test_missing_nested_key_is_reported(tmp_path):
    raw = config.load_raw(BASE)
    del raw["segment"]["train"]["lr"]
    path = tmp_path / "full.yaml"
    path.write_text("base: null\n" + yaml.safe_dump(raw))
    msg = _error(path)
    assert "missing key 'segment.train.lr'" in msg


# ----------------------------------------------------------------------------- check() constraints


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("segment.train.scheduler=bogus", ["segment.train", "scheduler", "bogus"]),
        ("classify.train.bf16=maybe", ["classify.train", "bf16", "maybe"]),
        ("segment.train.tta=[none, rot90]", ["segment.train", "tta", "rot90"]),
        ("segment.train.loss=[]", ["segment.train", "loss"]),
        ("data.channels=7", ["data", "channels", "7"]),
        ("data.channels=rgb", ["data", "channels", "rgb"]),
        ("data.train_rle_csv=train.csv", ["data", "train_masks", "train_rle_csv"]),
        ("data.train_masks=null", ["data", "train_masks", "train_rle_csv"]),
        ("folds.n_folds=1", ["folds", "n_folds"]),
        ("experiment.device=tpu", ["experiment", "device", "tpu"]),
        ("segment.input.mode=crop", ["segment.input", "mode", "crop"]),
        ("classify.patch.aggregate=mean", ["classify.patch", "aggregate", "mean"]),
    ],
)
def test_check_violations(override, words):
    msg = _error(DEMO, [override])
    for word in words:
        assert word in msg, (word, msg)


def test_check_accepts_valid_alternatives():
    cfg = config.load(
        DEMO,
        [
            "data.train_masks=null",
            "data.train_rle_csv=train.csv",
            "data.channels=1",
            "segment.train.scheduler=none",
            "experiment.device=cpu",
        ],
    )
    assert cfg.data.train_rle_csv == "train.csv" and cfg.data.channels == 1


# ----------------------------------------------------------------------------- file problems


def test_missing_file(tmp_path):
    msg = _error(tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "not found" in msg


def test_missing_base_file(tmp_path):
    msg = _error(_exp(tmp_path, {}, base=tmp_path / "gone.yaml"))
    assert "gone.yaml" in msg and "not found" in msg


def test_invalid_yaml(tmp_path):
    path = _exp(tmp_path, "segment:\n  train: [1, 2\n  epochs: 3\n", "broken.yaml")
    msg = _error(path)
    assert "broken.yaml" in msg and "invalid YAML" in msg


def test_top_level_must_be_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    msg = _error(path)
    assert "list.yaml" in msg and "mapping" in msg


def test_empty_file_is_just_base(tmp_path):
    path = _exp(tmp_path, "", "empty.yaml")
    cfg = config.load(path)
    assert cfg.experiment.name == "empty" and cfg.segment.train.epochs == 12


def test_circular_base(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    msg = _error(tmp_path / "a.yaml")
    assert "circular" in msg


def test_self_referencing_base(tmp_path):
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    assert "circular" in _error(tmp_path / "self.yaml")


def test_base_config_path_constant():
    assert paths.BASE_CONFIG.resolve() == BASE.resolve()


# ----------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_one_error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_cli_bad_config_key_exits_2(tmp_path):
    bad = _exp(tmp_path, {"segment": {"train": {"epoch": 3}}}, "bad.yaml")
    _assert_one_error_line(_cli("status", "--config", str(bad)), "segment.train.epoch", "epochs")


def test_cli_missing_config_exits_2(tmp_path):
    _assert_one_error_line(_cli("status", "--config", str(tmp_path / "missing.yaml")), "not found")


def test_cli_invalid_yaml_exits_2(tmp_path):
    bad = _exp(tmp_path, "a: [1\n", "broken.yaml")
    _assert_one_error_line(_cli("status", "--config", str(bad)), "invalid YAML")


def test_cli_bad_override_exits_2():
    _assert_one_error_line(_cli("status", "--config", str(DEMO), "--set", "segment.train.epochs=abc"), "segment.train.epochs", "int")


def test_cli_status_ok(tmp_path):
    proc = _cli("status", "--config", str(DEMO), "--set", f"experiment.artifacts={tmp_path / 'art'}")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.strip().splitlines()]
    assert [r[0] for r in rows][:5] == ["ingest", "ingest_test", "embed", "mosaic", "folds"]
    assert all(r[1] == "missing" for r in rows)


def test_defaults_live_in_base_yaml_only():
    """No section field carries a default of its own: base.yaml is the one place a default is
    written, so the two cannot drift. The exception: a field of a list item (a loss phase's
    lr_scale), which base.yaml cannot give to the items of an experiment's own list."""
    import dataclasses
    import typing

    from pipeline.config.schema import Config

    found = []

    def walk(cls: type, where: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            path = f"{where}.{f.name}" if where else f.name
            if not f.metadata.get("internal") and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING):
                found.append(path)
            tp = hints[f.name]
            for t in (tp, *typing.get_args(tp), *(a for arg in typing.get_args(tp) for a in typing.get_args(arg))):
                if dataclasses.is_dataclass(t):
                    walk(t, path)

    walk(Config, "")
    assert found == ["segment.train.loss.lr_scale"]
