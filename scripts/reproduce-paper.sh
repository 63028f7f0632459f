#!/usr/bin/env bash
# Reproduces the paper's tables on the CPU path: every experiment in configs/ with 3 seeds, two
# runs at a time, then prints the Markdown table that RESULTS.md holds.
#   scripts/reproduce-paper.sh [OUT_DIR] [JOBS]
set -euo pipefail
out=${1:-runs/paper}
jobs=${2:-2}
bin=target/release/wgtrain
cargo build --release --quiet
mkdir -p "$out"
experiments="softmax momentum l1-1e-2 l1-1e-4 l2-1e-2 l2-1e-4 sigmoid relu"
for name in $experiments; do
  for seed in 1 2 3; do
    echo "$name $seed"
  done
done | xargs -P "$jobs" -n 2 sh -c '
  dir="$0/$1-seed$2"
  [ -f "$dir/summary.json" ] && exit 0
  '"$bin"' train --config "configs/$1.toml" --seed "$2" --out "$dir" --device cpu --threads 1 --quiet --force
' "$out"
dirs=""
for name in $experiments; do
  for seed in 1 2 3; do dirs="$dirs $out/$name-seed$seed"; done
done
# shellcheck disable=SC2086
$bin table $dirs
