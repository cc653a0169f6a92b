"""The zoo table of issue 17: each model of a config alone, their blends and a distilled
student, each through the ensemble, scorer and submit stages (every model read from cache), with
its raw OOF, its final nested CV and its hidden-solution score.

Run: .venv/bin/python bench/zoo_table.py configs/demo_zoo.yaml segment fpn upp segment,fpn,upp distill
(an argument is one `ensemble.models` list, comma-separated).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import api  # noqa: E402
from pipeline.core import logs  # noqa: E402


def row(config: str, models: list[str]) -> dict:
    cfg = api.load_config(config, [f"ensemble.models=[{', '.join(models)}]"])
    for stage in ("ensemble", "scorer", "submit"):
        api.run(cfg, stage)
    ens, scorer, sub = (api.manifest(cfg, s)["metrics"] for s in ("ensemble", "scorer", "submit"))
    return {
        "models": "+".join(models),
        "oof": ens["oof_tgs"],
        "raw": scorer.get("nested_cv", {}).get("raw@0.5"),
        "final": scorer["cv"],
        "hidden": sub.get("hidden_score"),
        "gain": ens.get("blend_gain"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("lists", nargs="+", help="ensemble.models lists, comma-separated")
    args = ap.parse_args()
    logs.setup()
    rows = [row(args.config, text.split(",")) for text in args.lists]
    metric = api.load_config(args.config).submit.metric
    print(f"\n| models | OOF tgs @0.5 | nested CV {metric}, none | final nested CV | hidden | blend gain over best model (SE) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        g = r["gain"]
        gain = f"{g['mean']:+.4f} ({g['se']:.4f}) over {g['over']}" if g else "-"
        raw = "-" if r["raw"] is None else f"{r['raw']:.4f}"
        hidden = "-" if r["hidden"] is None else f"{r['hidden']:.4f}"
        print(f"| {r['models']} | {r['oof']:.4f} | {raw} | {r['final']:.4f} | {hidden} | {gain} |")


if __name__ == "__main__":
    main()
