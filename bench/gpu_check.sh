#!/usr/bin/env bash
# One prepared check for a lent GPU machine, at most 8 minutes: bench/gpu_check.sh [--dry]
#   1. the environment (GPUs, driver, torch, CUDA, bf16);
#   2. the smoke config end to end on CUDA (every stage, submission included);
#   2b. the smoke segment stage with progressive crops and batched TTA (issue 20's switches);
#   2c. the offline bundle of that run: predict.py on $DEVICE and on the CPU, each against the
#       pipeline's own submission (identical rows);
#   3. with more than one GPU: the smoke segment stage under torchrun, one process per GPU;
#   4. fold 0 of configs/tgs_salt_gpu.yaml under a time cap (CAP seconds, default 300) on the
#      tiles bench/gpu_prepare.sh put in .gpu/tgs_salt (or ../shared/data/tgs_salt), with its
#      training img/s and the fold's OOF mAP.
# Figures go to stdout and to $OUT/gpu_check.txt when OUT is set (the device tool's result folder).
# --dry runs the same steps on this CPU with 1 epoch on 200 tiles: a check of the script itself.
# On the device machine (no network): carry .gpu (see bench/gpu_prepare.sh) and run
#   bench/gpu_check.sh        with timeout_s 540.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; [[ "${1:-}" == "--dry" ]] && DRY=1
PY="${PY:-python3}"; [[ -x .venv/bin/python ]] && PY=.venv/bin/python
WORK="$(mktemp -d -t gpu_check.XXXXXX)"
REPORT="${OUT:-$WORK}/gpu_check.txt"
CAP="${CAP:-300}"
export PYTHONUNBUFFERED=1
say() { echo "$*" | tee -a "$REPORT"; }
if ! $PY -c "import segmentation_models_pytorch, albumentations, lightgbm" 2>/dev/null; then
  [[ -d .gpu/whl ]] || { say "gpu_check: smp/albumentations/lightgbm missing and no .gpu/whl (run bench/gpu_prepare.sh here, carry .gpu)"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site
fi

say "=== 1. environment ($(date -u +%Y-%m-%dT%H:%M:%SZ)) ==="
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$REPORT"
$PY - <<'PY' | tee -a "$REPORT"
import os, torch
cuda = torch.cuda.is_available()
print(f"python torch {torch.__version__}, CUDA {torch.version.cuda}, GPUs {torch.cuda.device_count()}, "
      f"bf16 {cuda and torch.cuda.is_bf16_supported()}, CPU cores {os.cpu_count()}")
PY
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
DEVICE=cuda
if [[ "$DRY" == 1 ]]; then DEVICE=cpu; elif [[ "$NGPU" == 0 ]]; then say "gpu_check: no GPU visible (use --dry for a CPU check of this script)"; exit 2; fi

SMOKE="$WORK/smoke_data"
$PY -c "from pipeline import demo; from pathlib import Path; demo.generate(Path('$SMOKE'), seed=3, n_train=48, n_test=12)"
SMOKE_SET=(--set "data.train_images=$SMOKE/train/images" --set "data.train_masks=$SMOKE/train/masks"
  --set "data.test_images=$SMOKE/test/images" --set "data.metadata=[$SMOKE/metadata.csv]"
  --set "data.solution_masks=$SMOKE/test_solution/masks" --set "experiment.device=$DEVICE")

say "=== 2. smoke config, every stage, on $DEVICE ==="
start=$(date +%s)
timeout 150 $PY -m pipeline all --config configs/smoke.yaml "${SMOKE_SET[@]}" --set "experiment.artifacts=$WORK/smoke" > "$WORK/smoke.log" 2>&1
rc=$?
grep -E "^\[|final|hidden" "$WORK/smoke.log" | tee -a "$REPORT"
say "smoke: rc $rc in $(( $(date +%s) - start )) s"
[[ $rc == 0 ]] || tail -20 "$WORK/smoke.log" | tee -a "$REPORT"

say "=== 2b. progressive crops and batched TTA (issue 20's switches) on $DEVICE ==="
start=$(date +%s)
timeout 150 $PY -m pipeline segment --config configs/smoke.yaml "${SMOKE_SET[@]}" --set "experiment.artifacts=$WORK/switches" \
  --set segment.input.size=64 --set "segment.train.progressive={crop: 32, until_epoch: 1}" --set experiment.batch_tta=true \
  --set segment.train.epochs=2 > "$WORK/switches.log" 2>&1
rc=$?
grep -E "^\[|epoch" "$WORK/switches.log" | tee -a "$REPORT"
say "switches: rc $rc in $(( $(date +%s) - start )) s"

say "=== 2c. offline bundle of the smoke run: predict.py on $DEVICE and on cpu ==="
start=$(date +%s)
$PY -m pipeline bundle --config configs/smoke.yaml "${SMOKE_SET[@]}" --set "experiment.artifacts=$WORK/smoke" --out "$WORK/bundle" 2>&1 | tail -1 | tee -a "$REPORT"
for dev in "$DEVICE" cpu; do
  # the script's folder (the bundle) leads sys.path, not this checkout; PYTHONPATH may hold .gpu wheels
  timeout 120 $PY "$WORK/bundle/predict.py" --images "$SMOKE/test/images" --metadata "$SMOKE/metadata.csv" \
    --device "$dev" --out "$WORK/bundle_$dev.csv" > "$WORK/bundle_$dev.log" 2>&1 || tail -3 "$WORK/bundle_$dev.log" | tee -a "$REPORT"
  $PY - "$WORK/bundle_$dev.csv" "$WORK"/smoke/smoke/submit-*/submission.csv "$dev" <<'PY' | tee -a "$REPORT"
import sys
import pandas as pd
got, want = (pd.read_csv(p, dtype=str, keep_default_na=False) for p in sys.argv[1:3])
print(f"bundle on {sys.argv[3]}: {(got.values == want.values).all(axis=1).mean():.0%} of {len(want)} rows identical to the pipeline's")
PY
done
say "bundle: $(( $(date +%s) - start )) s"

say "=== 3. DistributedDataParallel ==="
if [[ "$NGPU" -gt 1 ]]; then
  start=$(date +%s)
  timeout 150 "$(dirname "$PY")/torchrun" --standalone --nproc_per_node "$NGPU" -m pipeline segment --config configs/smoke.yaml \
    "${SMOKE_SET[@]}" --set "experiment.artifacts=$WORK/ddp" --set segment.train.sync_bn=true > "$WORK/ddp.log" 2>&1
  rc=$?
  grep -E "^\[|distributed:" "$WORK/ddp.log" | tee -a "$REPORT"
  say "ddp: $NGPU processes, rc $rc in $(( $(date +%s) - start )) s"
else
  say "ddp: skipped, $NGPU GPU (torchrun needs more than one to check data parallelism on a GPU)"
fi

say "=== 4. tgs_salt_gpu fold 0, capped at $CAP s ==="
TGS=.gpu/tgs_salt; [[ -d "$TGS" ]] || TGS=../shared/data/tgs_salt
if [[ ! -d "$TGS/images" ]]; then
  say "tgs fold: skipped, no tiles (run bench/gpu_prepare.sh and carry .gpu)"
else
  FOLD_SET=(--set "data.train_images=$TGS/images" --set "data.train_masks=$TGS/masks" --set "data.test_images=$TGS/images"
    --set "data.metadata=[$TGS/depths.csv]" --set "experiment.device=$DEVICE" --set "experiment.artifacts=$WORK/tgs"
    --set "segment.train.folds=[0]")
  [[ "$DRY" == 1 ]] && FOLD_SET+=(--set segment.input.size=64 --set segment.train.epochs=1 --set segment.train.swa_epochs=0 --set segment.train.max_images=200 --set segment.train.num_workers=0)
  start=$(date +%s)
  timeout "$CAP" $PY -m pipeline segment --config configs/tgs_salt_gpu.yaml "${FOLD_SET[@]}" > "$WORK/tgs.log" 2>&1
  rc=$?
  say "tgs fold: rc $rc (124 = stopped at the cap) in $(( $(date +%s) - start )) s"
  [[ $rc == 0 || $rc == 124 ]] || tail -20 "$WORK/tgs.log" | tee -a "$REPORT"
  $PY - "$WORK/tgs" "$([[ "$DRY" == 1 ]] && echo 200 || echo 0)" <<'PY' | tee -a "$REPORT"
import json, sys
from pathlib import Path
import pandas as pd
root = Path(sys.argv[1])
for metrics in sorted(root.glob("*/segment-*/fold0/metrics.csv")):
    folds = pd.read_csv(next(root.glob("*/folds-*/folds.csv")))
    fit = json.loads((metrics.parent / "fit.json").read_text()) if (metrics.parent / "fit.json").exists() else {}
    history = pd.read_csv(metrics)
    manifest = metrics.parent.parent / "manifest.json"
    n_train = int((folds["fold"] != 0).sum())
    if int(sys.argv[2]):  # segment.train.max_images subsamples the training part
        n_train = min(n_train, int(sys.argv[2]))
    print(f"tgs fold 0: {len(history)} epochs done, {n_train} training tiles, "
          f"median epoch {history['seconds'].median():.1f} s (validation included): "
          f"{n_train / history['seconds'].median():.0f} img/s; last val mAP {history['val_score'].dropna().iloc[-1]:.4f}")
    if manifest.exists():
        print(f"tgs fold 0 OOF mAP: {json.loads(manifest.read_text())['metrics']['oof_tgs']:.4f} (final model: {fit.get('final')})")
PY
fi
say "gpu_check: done; report in $REPORT"
