#!/usr/bin/env bash
# The paper sweep as a Slurm job array: 8 tasks share one output directory; each takes a
# disjoint slice of the 24 runs (wgtrain reads SLURM_ARRAY_TASK_ID / _COUNT / _MIN / _MAX /
# _STEP, so `--array=0-14:2` or `--array=0-7%2` work as they read). docs/cluster.md explains it.
# Submit from the repository root:  sbatch docs/slurm-paper-sweep.sh
# Afterwards (or any time):         target/release/wgtrain sweep report runs/sweep-paper
# Another sweep, binary or options, without editing this file (tests/slurm.rs does this):
#   sbatch --export=ALL,SWEEP=my-sweep.toml,OUT=runs/my-sweep,WGTRAIN_ARGS="--device cpu" docs/slurm-paper-sweep.sh
# On GPU nodes add `--gres=gpu:1`: each task trains on the GPU Slurm gave it.
#SBATCH --job-name=wgtrain-paper
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --time=00:30:00
# Preempted or requeued tasks run again and go on from each run's last saved epoch; append
# keeps both attempts in one log.
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=runs/slurm-%A_%a.out
set -euo pipefail
wgtrain=${WGTRAIN:-target/release/wgtrain}
sweep=${SWEEP:-configs/sweeps/paper.toml}
out=${OUT:-runs/sweep-paper}
# exec: Slurm's SIGTERM (preemption, requeue, time limit) reaches wgtrain itself, which then
# finishes the epoch in progress, saves it and exits.
# WGTRAIN_ARGS is split at spaces, never globbed (`--set layers=[784,64,10]` stays as written).
set -f
# shellcheck disable=SC2086
exec "$wgtrain" sweep "$sweep" --out "$out" --threads "${SLURM_CPUS_PER_TASK:-2}" ${WGTRAIN_ARGS:-}
