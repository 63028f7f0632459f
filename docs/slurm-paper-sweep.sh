#!/usr/bin/env bash
# The paper sweep as a Slurm job array: 8 tasks share one output directory; each takes a
# disjoint slice of the 24 runs (wgtrain reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT).
# Submit from the repository root:  sbatch docs/slurm-paper-sweep.sh
# Afterwards (or any time):         wgtrain sweep report runs/sweep-paper
#SBATCH --job-name=wgtrain-paper
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --time=00:30:00
#SBATCH --output=runs/slurm-%A_%a.out
set -euo pipefail
target/release/wgtrain sweep configs/sweeps/paper.toml --out runs/sweep-paper --threads "${SLURM_CPUS_PER_TASK:-2}"
