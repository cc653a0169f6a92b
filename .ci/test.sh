#!/usr/bin/env bash
# The README's test command: set up .venv (idempotent), lint, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./.ci/setup_venv.sh
# ruff beside the tests: a lint error or an unformatted file fails CI like a failing test.
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
exec .venv/bin/python -m pytest -q "$@" tests
