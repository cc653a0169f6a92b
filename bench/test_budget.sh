#!/usr/bin/env bash
# Test speed budgets: ./bench/test_budget.sh
# Runs the fast subset (pytest -m "not slow": under 60 s) and then the whole suite (under 15 min),
# each timed by the wall clock, and prints one line per run with pytest's counts, the seconds and
# the budget. Exit 1 if a run fails, else 2 if a run is over its budget, else 0. Both runs always
# happen; the load average is printed with the date because a busy machine is slower.
set -uo pipefail
cd "$(dirname "$0")/.."
FAST_BUDGET=60
WHOLE_BUDGET=900
LOG_DIR="$(mktemp -d -t test_budget.XXXXXX)"

failed=0
over=0
lines=()

# run LABEL BUDGET LOG [pytest args...]: runs pytest on tests/, appends the summary line to `lines`.
run() {
    local label=$1 budget=$2 log=$3
    shift 3
    echo "=== $label ===" >&2
    local start=$EPOCHREALTIME
    .venv/bin/python -m pytest -q "$@" tests 2>&1 | tee "$log" >&2
    local rc=${PIPESTATUS[0]}
    local secs
    secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    # pytest's last line, e.g. "433 passed, 44 deselected in 27.08s", without its own timing.
    local counts
    counts=$(tail -n 1 "$log" | sed -E 's/^=+ //; s/ =+$//; s/ in [0-9.]+s( \([0-9:]+\))?$//')
    local note=""
    if [[ $rc -ne 0 ]]; then
        failed=1
        note=" FAILED (pytest exit $rc, log $log)"
    elif awk -v s="$secs" -v b="$budget" 'BEGIN { exit !(s > b) }'; then
        over=1
        note=" OVER BUDGET"
    fi
    lines+=("$label: $counts in $secs s (budget $budget s)$note")
}

echo "test budget on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPU cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
run 'fast subset (-m "not slow")' "$FAST_BUDGET" "$LOG_DIR/fast.log" -m "not slow"
run "whole suite" "$WHOLE_BUDGET" "$LOG_DIR/whole.log"

echo
printf '%s\n' "${lines[@]}"
if [[ $failed -ne 0 ]]; then
    exit 1
elif [[ $over -ne 0 ]]; then
    exit 2
fi
