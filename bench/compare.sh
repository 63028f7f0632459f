#!/usr/bin/env bash
# Runs wgtrain bench and the two peers alternately on this machine, same config (the paper's
# momentum experiment), same thread count, and prints each one's table; compare medians as
# ratios within one run of this script.
#   bench/compare.sh [BATCH_SIZES] [THREADS] [DEVICES]
#   bench/compare.sh cnn [THREADS]     configs/cnn.toml against bench/peers/torch_cnn.py, batch 128
#   bench/compare.sh gemm [THREADS]    the CPU path's GEMM and FMA peaks against numpy's `@`
#                                      (OpenBLAS), three rounds
#   bench/compare.sh search [THREADS]  the pruned random search (configs/sweeps/search.toml) on
#                                      the CPU against bench/peers/optuna_search.py, two rounds
# EXTRA_KERNELS=avx2 times wgtrain again in every round on that kernel set
# (WGTRAIN_CPU_KERNELS), after the default widest one: AVX2 against AVX-512 on a CPU with both;
# in `cnn` mode PyTorch too (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS),
# which stands in for an AVX2-only machine.
# EXTRA_BIN=PATH times a second wgtrain build in every round too (another commit, copied aside).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${2:-2}
bin=target/release/wgtrain
[ -x "$bin" ] || cargo build --release --quiet
if [ "${1:-}" = gemm ]; then
  export OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
  for round in 1 2 3; do
    echo "## round $round"
    for kernels in auto ${EXTRA_KERNELS:-}; do
      # One short epoch: the peaks are measured before any training.
      WGTRAIN_CPU_KERNELS=$kernels "$bin" bench --devices cpu --threads "$threads" --warmup 0 --epochs 1 |
        grep -E '^(machine|CPU f32)'
    done
    python3 bench/peers/numpy_gemm.py | grep '^numpy'
  done
  exit 0
fi
if [ "${1:-}" = search ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  for round in 1 2; do
    echo "## round $round"
    rm -rf "$out/search"
    start=$EPOCHREALTIME
    "$bin" sweep configs/sweeps/search.toml --device cpu --threads "$threads" --out "$out/search" >/dev/null 2>&1
    python3 - "$out/search/results.csv" "$start" "$EPOCHREALTIME" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
epochs, secs = sum(int(r["epochs_run"]) for r in rows), float(sys.argv[3]) - float(sys.argv[2])
pruned = sum(r["status"] == "pruned" for r in rows)
print(f"wgtrain: {len(rows)} trials ({pruned} pruned), {epochs} epochs in {secs:.1f} s ({epochs / secs:.2f} epochs/s)")
PY
    if python3 -c 'import optuna, torch' 2>/dev/null; then
      python3 bench/peers/optuna_search.py --threads "$threads" | grep '^optuna'
    fi
  done
  exit 0
fi
if [ "${1:-}" = cnn ]; then
  for round in 1 2; do
    echo "## round $round"
    for b in "$bin" ${EXTRA_BIN:-}; do
      for kernels in auto ${EXTRA_KERNELS:-}; do
        echo "### $b, WGTRAIN_CPU_KERNELS=$kernels"
        WGTRAIN_CPU_KERNELS=$kernels "$b" bench --config configs/cnn.toml --devices cpu --batch-sizes 128 --threads "$threads" --warmup 1 --epochs 2
      done
    done
    if python3 -c 'import torch' 2>/dev/null; then
      python3 bench/peers/torch_cnn.py --bench --warmup 1 --epochs 2 --threads "$threads" | grep '^{'
      if [ "${EXTRA_KERNELS:-}" = avx2 ]; then
        # PyTorch held to AVX2 too: its own kernels, oneDNN's convolutions and MKL's GEMMs.
        echo "### PyTorch on AVX2 kernels"
        ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
          python3 bench/peers/torch_cnn.py --bench --warmup 1 --epochs 2 --threads "$threads" | grep '^{'
      fi
    fi
  done
  exit 0
fi
batches=${1:-128,1024}
devices=${3:-cpu}
export OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
for round in 1 2; do
  echo "## round $round"
  for b in "$bin" ${EXTRA_BIN:-}; do
    for kernels in auto ${EXTRA_KERNELS:-}; do
      echo "### $b, WGTRAIN_CPU_KERNELS=$kernels"
      WGTRAIN_CPU_KERNELS=$kernels "$b" bench --devices "$devices" --batch-sizes "$batches" --threads "$threads"
    done
  done
  if python3 -c 'import numpy' 2>/dev/null; then python3 bench/peers/numpy_mlp.py --batch-sizes "$batches" | grep '^|'; fi
  if python3 -c 'import torch' 2>/dev/null; then python3 bench/peers/torch_mlp.py --device cpu --threads "$threads" --batch-sizes "$batches" | grep '^|'; fi
done
