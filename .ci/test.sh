#!/usr/bin/env bash
# The README's test command: set up .venv (idempotent), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./.ci/setup_venv.sh
exec .venv/bin/python -m pytest -q "$@" tests
