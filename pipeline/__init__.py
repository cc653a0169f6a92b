"""A staged, cached segmentation pipeline for Kaggle competitions (docs/architecture.md).

Importing it sets one process-wide default before torch or LightGBM load their OpenMP runtime
(libgomp): a waiting OpenMP thread spins 10,000 times, then sleeps (GOMP_SPINCOUNT=10000;
libgomp's own default spins 300,000 times, some milliseconds). Both libraries wait between many
short parallel regions, and two jobs on the same cores (a stage beside a notebook or a second
run) then burn each other's cores spinning: the demo's scorer once took 586 s instead of 6 s
beside a training run. bench/core_sharing.py, 2 cores, a LightGBM job beside a training job, 7-9
runs: they slowed 3.1-17x and 2.4-11x with libgomp's default, 3.9-4.6x and 2.0-2.7x with this
one, and neither ran slower alone. GOMP_SPINCOUNT=1000 shares better (2.6-2.8x, 1.6x) but costs
8-13% alone; OMP_WAIT_POLICY=PASSIVE (no spinning) made LightGBM 3.7x and training 1.2x slower
alone. A policy or spin count set in the environment
wins; PIPELINE_OMP_DEFAULTS=0 leaves libgomp's default. It must be set before the runtime loads,
so a notebook imports `pipeline` before torch, lightgbm or sklearn."""

import os

if os.environ.get("PIPELINE_OMP_DEFAULTS", "1") != "0" and "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
