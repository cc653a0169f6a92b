#!/usr/bin/env bash
# Fresh-venv reproduction of a bundle's submission:
#   bench/bundle_venv_check.sh BUNDLE TEST_DIR EXPECTED_CSV [predict.py options, e.g. --metadata a.csv b.csv]
# Makes a new virtual environment outside the repository from the bundle's requirements.txt
# alone (from BUNDLE/wheels when the bundle has them, offline), runs the bundle's predict.py from
# another folder with `python -I` (no checkout on the path), and compares its submission with
# EXPECTED_CSV (the pipeline's own, submissions/... or the submit stage's submission.csv) byte
# for byte. Prints the install and prediction times, the venv's package count and the verdict.
# BUNDLE_VENV=DIR keeps the venv in DIR (made there on first use, outside the repository) so that
# several bundles are checked in one fresh venv: each run still installs its own requirements.txt.
set -euo pipefail
BUNDLE="$(cd "${1:?usage: bundle_venv_check.sh BUNDLE TEST_DIR EXPECTED_CSV [predict options]}" && pwd)"
TEST_DIR="$(cd "${2:?test folder}" && pwd)"
EXPECTED="$(cd "$(dirname "${3:?expected submission}")" && pwd)/$(basename "$3")"
shift 3
ARGS=()  # paths among the predict.py options, made absolute: predict.py runs from another folder
for a in "$@"; do if [[ -e "$a" ]]; then a="$(realpath "$a")"; fi; ARGS+=("$a"); done
WORK="$(mktemp -d -t bundle-venv.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
VENV="${BUNDLE_VENV:-$WORK/venv}"
start=$(date +%s)
[[ -x "$VENV/bin/python" ]] || python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q -r "$BUNDLE/requirements.txt")
if [[ -d "$BUNDLE/wheels" ]]; then PIP+=(--no-index --find-links "$BUNDLE/wheels"); fi
"${PIP[@]}"
installed=$(( $(date +%s) - start ))
echo "venv: $("$VENV/bin/python" -m pip list 2>/dev/null | tail -n +3 | wc -l) packages installed from requirements.txt in ${installed}s"
cd "$WORK"
start=$(date +%s)
"$VENV/bin/python" -I "$BUNDLE/predict.py" --images "$TEST_DIR" --out "$WORK/submission.csv" "${ARGS[@]}"
echo "predict.py: $(( $(date +%s) - start ))s, $(($(wc -l < "$WORK/submission.csv") - 1)) rows"
if cmp -s "$WORK/submission.csv" "$EXPECTED"; then
  echo "identical to $EXPECTED"
else
  echo "DIFFERS from $EXPECTED: $(diff <(tail -n +2 "$WORK/submission.csv") <(tail -n +2 "$EXPECTED") | grep -c '^<') rows"
  exit 1
fi
