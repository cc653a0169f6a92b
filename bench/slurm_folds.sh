#!/usr/bin/env bash
# Fold-parallel training on a SLURM cluster: one fold per array task, each on its own GPU, every
# task sharing one artifacts folder on a shared file system (README, "Fold-parallel runs").
# An example to adapt (partition, time, CPUs), not run by the tests. From the repository root:
#
#   .venv/bin/python -m pipeline folds --config configs/x.yaml        # once: ingest + folds, cached
#   JOB=$(sbatch --parsable --export=ALL,CONFIG=configs/x.yaml bench/slurm_folds.sh)
#   sbatch --dependency=afterok:$JOB --gres=gpu:1 --wrap ".venv/bin/python -m pipeline all --config configs/x.yaml"
#
# The last job runs every stage: it keeps each fold the array trained (model and OOF maps),
# merges and scores them, and trains what the array did not (e.g. a failed task's fold).
# --array lists the folds: 0-4 for folds.n_folds: 5, or those of segment.train.folds.
# STAGES=classify,segment (in --export) trains fold K's classifier too in task K.
#
#SBATCH --job-name=seg-folds
#SBATCH --array=0-4
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=seg-folds-%A_%a.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:?submit from the repository root with sbatch}"
CONFIG="${CONFIG:?set CONFIG, e.g. sbatch --export=ALL,CONFIG=configs/x.yaml bench/slurm_folds.sh}"
STAGES="${STAGES:-segment}"
for stage in ${STAGES//,/ }; do
    .venv/bin/python -m pipeline "$stage" --config "$CONFIG" --fold "$SLURM_ARRAY_TASK_ID" "$@"
done
