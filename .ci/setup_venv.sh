#!/usr/bin/env bash
# Create .venv and install requirements.lock (every package pinned and hashed); a no-op (under
# a second) when already up to date. requirements.txt keeps the ranges the lock is resolved
# from; refresh the lock with bench/lock.sh after changing them (README, Installation).
set -euo pipefail
cd "$(dirname "$0")/.."
STAMP=.venv/.requirements.sha
want=$(cat requirements.txt requirements.lock | sha256sum | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $STAMP && "$(cat $STAMP)" == "$want" ]]; then exit 0; fi
[[ -x .venv/bin/python ]] || python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
# --no-deps: the lock lists every dependency itself, so pip resolves nothing of its own;
# --require-hashes: a file that differs from the one locked is refused.
.venv/bin/python -m pip install -q --require-hashes --no-deps -r requirements.lock
echo "$want" > $STAMP
