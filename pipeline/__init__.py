"""A staged, cached segmentation pipeline for Kaggle competitions (docs/architecture.md).

Importing it sets one process-wide default before torch or LightGBM load their OpenMP runtime:
waiting OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE). Both libraries
otherwise spin-wait between parallel regions, and two jobs on the same cores (a stage beside a
notebook or a second run) then take each other's cores: the demo's scorer once took 586 s
instead of 6 s beside a training run. bench/core_sharing.py measures the effect. A policy set in
the environment wins; PIPELINE_OMP_DEFAULTS=0 leaves OpenMP's own default. It must be set before
the runtime loads, so a notebook imports `pipeline` before torch, lightgbm or sklearn."""

import os

if os.environ.get("PIPELINE_OMP_DEFAULTS", "1") != "0":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
