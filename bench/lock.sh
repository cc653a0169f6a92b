#!/usr/bin/env bash
# Refresh requirements.lock from requirements.txt: every dependency resolved, pinned and hashed
# (pip-tools' pip-compile, run from a throwaway venv so that the project's own stays as locked).
#   bench/lock.sh            # keep the locked versions where requirements.txt still admits them
#   bench/lock.sh --upgrade  # the newest versions requirements.txt admits
# Then: .ci/setup_venv.sh installs it; rerun the demo and compare its table (docs/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${LOCK_TOOLS_VENV:-/tmp/pip-tools-venv}
[[ -x $TOOLS/bin/pip-compile ]] || { python3.11 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q pip-tools; }
# --allow-unsafe: pin pip/setuptools too; no index or find-links lines, so the lock works
# wherever pip's own configuration points (PyPI, a mirror, a wheel folder).
"$TOOLS/bin/pip-compile" --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
    --no-emit-find-links --quiet "$@" -o requirements.lock requirements.txt
