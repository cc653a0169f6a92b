"""Command line: a thin layer over `pipeline.api`.

python -m pipeline STAGE --config FILE [--set key=value ...] [--force]
python -m pipeline STAGE --config FILE --fold K [--fold K2 | --fold K,K2]   one fold (classify, segment, pseudo, distill)
python -m pipeline segment --config FILE --model NAME   one model of segment.models (also pseudo, status)
python -m pipeline all --config FILE [--set ...]      every stage in order, with status and time
python -m pipeline status --config FILE
python -m pipeline demo-data [--out DIR] [--seed N] [--classes K]
python -m pipeline score SUBMISSION.csv --masks DIR [--metric tgs|dice]
python -m pipeline score SUBMISSION.csv --solution SOLUTION.csv --images DIR --classes a,b,c [--metric dice]
python -m pipeline bundle --config FILE --out DIR [--export torchscript|onnx] [--wheels]
python -m pipeline plan --config FILE --budget 2h [--device cpu|cuda] [--bundle DIR] [--n-test N]
python -m pipeline init --train-images DIR (--train-masks DIR | --train-rle CSV) [--test-images DIR] [--metadata CSV]
    [--classes a,b] --budget 90m --out configs/NAME.yaml   fingerprint a dataset, write a config sized to the budget

Exit codes: 2 bad input, 3 a stage folder locked by another process, 128+N stopped by signal N.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.config import loader as config_mod
from pipeline.config import zoo
from pipeline.core import distributed, logs
from pipeline.core.errors import LockedError, UserError
from pipeline.engine import cache, foldrun
from pipeline.engine.graph import Graph
from pipeline.stages import GRAPH

DEFAULT_CONFIG = "configs/demo.yaml"


def _parser(graph: Graph) -> argparse.ArgumentParser:
    stage_lines = "\n".join(f"  {s.name:<12} {s.doc}" for s in graph.stages.values())
    p = argparse.ArgumentParser(
        prog="python -m pipeline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Staged, cached segmentation pipeline.",
        epilog=f"stages (in run order):\n{stage_lines}\n\nother commands:\n  all          run every stage in order\n  status       list each stage as done, partial, stale or missing\n  report       print the per-step CV table\n  demo-data    generate the synthetic demo dataset\n  score        score a submission CSV against a folder of masks\n  bundle       write the offline inference bundle (--out DIR)\n  plan         choose models, folds and TTA views for a time budget (--budget 2h)\n  init         fingerprint a new dataset, write a config sized to a time budget (init --help)\n  seeds        run the config with --n seeds: each step's CV mean and sd (the report marks gains within it)",
    )
    p.add_argument("command", help="a stage name or one of: all, status, report, demo-data, score, bundle, plan, seeds")
    p.add_argument("target", nargs="?", help="score: the submission CSV")
    p.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"experiment YAML (default {DEFAULT_CONFIG})",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. segment.train.epochs=3",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rerun the stage even if its artifacts are cached",
    )
    p.add_argument(
        "--fold",
        dest="folds",
        action="append",
        default=None,
        metavar="K",
        help="classify, segment, pseudo: train only fold K (repeatable or K,K2), beside other such runs sharing the "
        "artifacts folder; a later run without --fold keeps the finished folds, merges and scores them",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="segment, pseudo, status: model NAME of segment.models (its own artifact; default: the segment section's)",
    )
    _command_options(p)
    return p


def _command_options(p: argparse.ArgumentParser) -> None:
    """The options of the commands other than the stages: score, demo-data, bundle, plan."""
    p.add_argument("--masks", help="score: folder of ground-truth masks")
    p.add_argument("--solution", help="score: a long-format solution CSV (K classes; with --images and --classes)")
    p.add_argument("--images", help="score --solution: the images folder (for the image sizes)")
    p.add_argument("--classes", help="score --solution: the class names in class-id order, comma-separated")
    p.add_argument("--metric", default=None, help="score: tgs | dice | iou (default tgs; dice with --solution)")
    p.add_argument("--out", default=None, help="demo-data: output folder; bundle: the bundle folder to write")
    p.add_argument("--export", choices=["torchscript", "onnx"], default=None, help="bundle: export the fold models (TorchScript or ONNX)")
    p.add_argument("--budget", default=None, help="plan: test inference time limit (2h, 90m, 3600)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="plan: the device to time on")
    p.add_argument("--bundle", default=None, help="plan: write the choice into this bundle")
    p.add_argument("--n-test", type=int, default=None, help="plan: test images to plan for (default: the local test folder's)")
    p.add_argument("--wheels", action="store_true", help="bundle: download the requirements' wheels into the bundle")
    p.add_argument("--seed", type=int, default=None, help="demo-data: seed")
    p.add_argument("--n", type=int, default=3, help="seeds: how many seeds (experiment.seed, +1, ...)")
    p.add_argument("--through", default="submit", metavar="STAGE", help="seeds: run the stages up to this one (default submit)")


def _folds(args: argparse.Namespace) -> list[int] | None:
    """The --fold values (each a number or a comma list), checked to apply to the command."""
    if args.folds is None:
        return None
    try:
        folds = sorted({int(part) for text in args.folds for part in text.split(",")})
    except ValueError:
        raise UserError(f"--fold takes fold numbers (K or K,K2), got {', '.join(args.folds)!r}") from None
    foldrun.check_fold_stage(args.graph, args.command)
    return folds


def _run_stage(
    graph: Graph, cfg: config_mod.Config, name: str, force: bool, keys: dict[str, str] | None = None, folds: list[int] | None = None
) -> None:
    start = time.perf_counter()
    if folds is None:
        folder, ran = cache.run_stage(graph, cfg, name, force=force, keys=keys)
    else:
        folder, ran = foldrun.run_folds(graph, cfg, name, folds, force=force, keys=keys)
    state = "ran" if ran else "cached"
    if not distributed.is_main():  # under torchrun one process reports
        return
    note = ""
    if folds is not None and ran:
        state = f"{', '.join(f'fold{k}' for k in folds)} ran"
        note = f" (the stage is unfinished until a run of {name} without --fold)"
    print(
        f"[{name}] {state} in {time.perf_counter() - start:.1f}s -> {folder}{note}",
        flush=True,
    )


def _terminate(signum: int, _frame) -> None:
    # Raised inside the running stage, so that a forced rerun puts the previous result back
    # (Python's default SIGTERM/SIGHUP handling exits without unwinding). SIGHUP: the terminal
    # or ssh session of a foreground run closed.
    raise SystemExit(128 + signum)


def format_plans(plans, pick, top: int = 25) -> str:
    """The planner's table, best OOF first, and its choice."""
    ranked = plans.sort_values(["oof", "seconds"], ascending=[False, True])
    is_pick = (ranked[["models", "views", "folds"]] == pick[["models", "views", "folds"]]).all(axis=1)
    shown = ranked[(np.arange(len(ranked)) < top) | is_pick.to_numpy()]
    lines = [f"{'models':<24} {'views':<18} {'folds':>5} {'expected s':>11} {'OOF':>7} {'vs config (paired SE)':>22}"]
    for _, r in shown.iterrows():
        mark = "  <- chosen" if (r[["models", "views", "folds"]] == pick[["models", "views", "folds"]]).all() else ""
        paired = f"{r['vs_config']:+.4f} ({r['se']:.4f})"
        lines.append(f"{r['models']:<24} {r['views']:<18} {r['folds']:>5} {r['seconds']:>11.1f} {r['oof']:>7.4f} {paired:>22}{mark}")
    lines.append(
        f"chosen: {pick['models']}, views {pick['views']}, {pick['folds']} fold model(s) each: {pick['seconds']:.0f} s, OOF {pick['oof']:.4f}"
        f" (best of {len(plans)} choices on the same OOF images: optimistic; within ~2 SE of the configured choice is noise)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None, graph: Graph = GRAPH) -> int:
    """The command line over `graph` (the pipeline's stage table; a test may add stages)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["init"]:  # its own options: python -m pipeline init --help
        from pipeline.init import cli as init_cli

        return _guarded(init_cli.main, argv[1:])
    args = _parser(graph).parse_args(argv)
    args.graph = graph
    return _guarded(_dispatch, args)


def _guarded(fn, arg) -> int:
    """Run a command with the exit codes of the module docstring."""
    logs.setup()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        return fn(arg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LockedError as exc:  # another run of the same stage: not an input error, so its own code
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _score(args: argparse.Namespace) -> int:
    if args.solution:
        from pipeline.data.multiclass import Classes
        from pipeline.evaluation.long_score import score_long

        if not (args.target and args.images and args.classes):
            raise UserError("score --solution needs a submission CSV, --images DIR and --classes a,b,...")
        metric = args.metric or "dice"
        result = score_long(
            Path(args.target), Path(args.solution), Path(args.images), Classes(tuple(c.strip() for c in args.classes.split(","))), metric
        )
        print(f"{metric}: {result.mean:.4f} over {result.images} images x {len(result.per_class)} classes")
        for name, value in result.per_class.items():
            print(f"  {name}: {value:.4f}")
        return 0
    from pipeline.api import score_submission

    if not args.target or not args.masks:
        raise UserError("score needs a submission CSV and --masks DIR (or --solution CSV for K classes)")
    metric = args.metric or "tgs"
    value, n = score_submission(args.target, args.masks, metric)
    print(f"{metric}: {value:.4f} over {n} images")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    folds = _folds(args)
    if args.command == "demo-data":
        from pipeline.demo import cli as demo

        extra = (["--out", args.out] if args.out else []) + (["--seed", str(args.seed)] if args.seed is not None else [])
        extra += ["--classes", args.classes] if args.classes else []
        return demo.main(extra)
    if args.command == "score":
        return _score(args)
    cfg = config_mod.load(args.config, args.overrides)
    if args.model is not None:
        if args.command not in ("segment", "pseudo", "status"):
            raise UserError(f"--model applies to segment, pseudo and status, not {args.command}")
        cfg = zoo.model_cfg(cfg, args.model)
    if folds is not None:
        foldrun.check_folds(args.graph, cfg, args.command, folds, args.force)  # before preflight: a bad fold fails at once
    if args.command == "status":
        for name, state, key in cache.status(args.graph, cfg):
            print(f"{name:<12} {state:<8} {key}")
        return 0
    if args.command == "report":
        from pipeline.engine.report import build_report

        print(build_report(args.graph, cfg))
        return 0
    if args.command == "bundle":
        return _bundle(cfg, args)
    if args.command == "plan":
        return _plan(cfg, args)
    if args.command == "seeds":
        return _seeds(cfg, args)
    if args.command not in (*args.graph.stages, "all"):
        raise UserError(
            f"unknown command {args.command!r}; valid: {', '.join([*args.graph.stages, 'all', 'status', 'report', 'demo-data', 'score', 'bundle', 'plan', 'seeds'])}"
        )
    return _run_stages(cfg, args, folds)


def _bundle(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from pipeline import api

    if not args.out:
        raise UserError("bundle needs --out DIR (a new folder)")
    manifest = api.bundle(cfg, args.out, export=args.export, wheels=args.wheels)
    print(f"bundle: {len(manifest['files'])} files, {manifest['total_bytes'] / 2**20:.1f} MiB -> {args.out}")
    return 0


def _plan(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from pipeline import api

    if not args.budget:
        raise UserError("plan needs --budget (e.g. 2h, 90m, 3600)")
    plans, pick = api.plan(cfg, args.budget, args.device, args.bundle, args.n_test)
    print(format_plans(plans, pick))
    return 0


def _seeds(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    """`seeds --n N [--through STAGE]`: the config under N seeds, each step's CV mean and sd."""
    from pipeline import preflight
    from pipeline.engine import seeds
    from pipeline.engine.report import seed_table_path

    preflight.check(cfg, "all")
    distributed.setup(cfg.experiment.device)
    table = seeds.run(args.graph, cfg, args.n, args.through)
    if distributed.is_main():
        print(seeds.format_table(table))
        print(f"written: {seed_table_path(args.graph, cfg, args.through)}")
    return 0


def _run_stages(cfg: config_mod.Config, args: argparse.Namespace, folds: list[int] | None) -> int:
    """A stage, or `all` of them and the report: the commands that train and predict."""
    from pipeline import preflight

    preflight.check(cfg, args.command)
    distributed.setup(cfg.experiment.device)  # under torchrun: join the process group
    if args.command == "all":
        keys: dict[str, str] = {}  # keys depend on the config and input files only: compute each once
        for name in args.graph.stages:
            _run_stage(args.graph, cfg, name, force=False, keys=keys)
        if not distributed.is_main():
            return 0
        from pipeline.engine.report import build_report

        print(build_report(args.graph, cfg, save=True))
        return 0
    _run_stage(args.graph, cfg, args.command, args.force, folds=folds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
