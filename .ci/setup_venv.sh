#!/usr/bin/env bash
# Create .venv and install requirements.txt; a no-op (under a second) when already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
STAMP=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $STAMP && "$(cat $STAMP)" == "$want" ]]; then exit 0; fi
[[ -x .venv/bin/python ]] || python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
echo "$want" > $STAMP
