#!/usr/bin/env bash
# Run every stage in order: ./run_all.sh [CONFIG] [--nproc N] [--set key=value ...]
# Sets up .venv on first use (idempotent), generates the demo data when the config needs it,
# then runs the stages (cached ones are skipped) and prints each stage's status, time, and the CV table.
# --nproc N: run under torchrun with N processes (DistributedDataParallel training, one GPU each
# on CUDA; rank 0 runs the other stages and writes everything).
set -euo pipefail
cd "$(dirname "$0")"
CONFIG="configs/demo.yaml"
if [[ $# -gt 0 && "$1" != --* ]]; then CONFIG="$1"; shift; fi
OVERRIDES=()
NPROC=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --set) OVERRIDES+=(--set "$2"); shift 2 ;;
    --set=*) OVERRIDES+=(--set "${1#--set=}"); shift ;;
    --nproc) NPROC="$2"; shift 2 ;;
    --nproc=*) NPROC="${1#--nproc=}"; shift ;;
    *) echo "run_all.sh: unknown argument '$1' (usage: run_all.sh [CONFIG] [--nproc N] [--set key=value ...])" >&2; exit 2 ;;
  esac
done
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then echo "run_all.sh: --nproc must be a positive integer, got '$NPROC'" >&2; exit 2; fi
./.ci/setup_venv.sh
PY=.venv/bin/python
export PYTHONUNBUFFERED=1
# Generate the demo data only when the resolved config trains on it (a grep of the YAML files
# matched base.yaml's default for every config).
# Prints the demo-data arguments of the demo a config trains on (the binary one, or the K-class
# one under data/demo_multiclass), nothing for real data.
uses_demo='import sys; from pipeline import api
cfg = api.load_config(sys.argv[1], [a for a in sys.argv[2:] if a != "--set"])
images = str(cfg.data.train_images)
if images.startswith("data/demo_multiclass/"):
    print(f"data/demo_multiclass --classes {len(cfg.data.classes)}")
elif images.startswith("data/demo/"):
    print("data/demo")'
demo=$($PY -c "$uses_demo" "$CONFIG" "${OVERRIDES[@]}" 2>/dev/null || true)
if [[ -n "$demo" && ! -f "${demo%% *}/stats.json" ]]; then
  read -r -a demo_args <<< "$demo"
  $PY -m pipeline demo-data --out "${demo_args[@]}"
fi
LAUNCH=($PY -m pipeline)
if [[ "$NPROC" -gt 1 ]]; then LAUNCH=(.venv/bin/torchrun --standalone --nproc_per_node "$NPROC" -m pipeline); fi
start=$(date +%s)
"${LAUNCH[@]}" all --config "$CONFIG" "${OVERRIDES[@]}"
echo "run_all.sh: done in $(( $(date +%s) - start ))s"
