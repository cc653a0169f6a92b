#!/usr/bin/env bash
# Demo speed budget (issue 19): ./bench/demo_budget.sh
# `./run_all.sh` on a fresh clone of this repository's HEAD (its .venv linked, so setup is not
# timed; the demo data is generated before the clock starts, as run_all.sh does), and prints the
# wall time of the stages against the 5-minute budget with each stage's seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=300
DIR="$(mktemp -d -t demo_budget.XXXXXX)"
git clone -q . "$DIR/repo"
ln -s "$PWD/.venv" "$DIR/repo/.venv"
cd "$DIR/repo"
./run_all.sh > "$DIR/run.log" 2>&1 || { tail -20 "$DIR/run.log"; exit 1; }
grep -E "^\[" "$DIR/run.log"
secs=$(grep -o "done in [0-9]*s" "$DIR/run.log" | grep -o "[0-9]*")
echo "demo run_all.sh on a fresh clone: ${secs} s for the stages (budget ${BUDGET} s: $([[ $secs -le $BUDGET ]] && echo met || echo NOT met)); load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%d)"
grep -E "final|hidden" "$DIR/run.log" | head -3
rm -rf "$DIR"
