#!/usr/bin/env bash
# Quality benchmark: ./bench/quality.sh CONFIG [--set key=value ...]
# Runs run_all.sh for the config, then prints the per-step CV table, the final CV, the wall
# time and the peak memory (max RSS of the pipeline process and its children).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:?usage: bench/quality.sh CONFIG [--set key=value ...]}"; shift
LOG="$(mktemp -t quality.XXXXXX.log)"
start=$(date +%s)
.venv/bin/python - "$CONFIG" "$@" <<'PY' 2>&1 | tee "$LOG"
import resource, subprocess, sys
rc = subprocess.call(["./run_all.sh", *sys.argv[1:]])
peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"quality: peak memory {peak_mb:.0f} MB")
sys.exit(rc)
PY
wall=$(( $(date +%s) - start ))
echo
echo "=== quality: $CONFIG on $(date -u +%Y-%m-%d) ($(nproc) CPU cores, $(python3 -c 'import os; print(round(os.sysconf("SC_PAGE_SIZE")*os.sysconf("SC_PHYS_PAGES")/2**30))') GiB RAM) ==="
OVERRIDES=()
while [[ $# -gt 0 ]]; do OVERRIDES+=("$1"); shift; done
.venv/bin/python -m pipeline report --config "$CONFIG" "${OVERRIDES[@]}"
grep "quality: peak memory" "$LOG" || true
echo "final CV: $(grep -o 'CV [0-9.]*)' "$LOG" | tail -1 | tr -d ')')"
echo "wall time: ${wall}s (cached stages are skipped: rerun on fresh artifacts for a full timing)"
