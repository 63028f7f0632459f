#!/usr/bin/env bash
# Everything to measure when a real GPU is at hand, in one go, most important first, inside a
# time budget (LEASE_BUDGET_S, default 420 s of command time: a lent machine comes with about
# 15 minutes of device time, its start included, and a rerun must still fit):
#   1. adapters and `check --all-adapters`;
#   2. `bench` on CPU and GPU with the per-kernel profile and 8 models packed, batch 32/128/1024;
#   2b. the CNN (#18's GPU targets): configs/cnn.toml's epoch on the GPU against PyTorch eager
#      CUDA (when torch with CUDA is installed), and one seed trained to early stopping on
#      the GPU (its summary.json and metrics.csv kept);
#   3. `wgtrain tune` at batch 128 (every arrangement; the one kept saved in $OUT/tuning.toml),
#      and bench again starting from it;
#   4. each tuning knob (gpu::Tuning) against the defaults: the gather in a dispatch of its own
#      (WGTRAIN_FUSE_GATHER=0), matmul's k step at 32 and 64 (WGTRAIN_TILE_K), an epoch
#      submitted every 64 steps while the rest is recorded (WGTRAIN_SUBMIT_EVERY), and the
#      pipelined tile loop (WGTRAIN_PREFETCH=1), alone and with the k step at 64;
#   5. the paper sweep packed, then (if time is left) one run at a time.
# Output: $OUT (or ./gpu-lease-out) holds lease.md (every table, in order), bench.jsonl,
# tuning.toml, the packed sweep's results.md and the CNN run's summary.json and metrics.csv:
# six files, inside the device tool's eight-file limit. Copy the
# tables into BENCHMARKS.md and RESULTS.md with the machine, driver, command and date.
#   bench/gpu-lease.sh [WGTRAIN_BINARY]
# Build here and carry the binary stripped (the release profile keeps debug info: ~70 MB):
#   mkdir -p .bin && strip -o .bin/wgtrain target/release/wgtrain   # .bin/ is git-excluded
# On a bare machine without a Vulkan loader, put its .deb files (libvulkan1, and libegl1 for
# GL) in .gl/ beside the repository root and they are unpacked first.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/wgtrain}
out=${OUT:-gpu-lease-out}
budget=${LEASE_BUDGET_S:-420}
mkdir -p "$out"
log="$out/lease.md"
if compgen -G ".gl/*.deb" >/dev/null; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
# NVIDIA containers keep the Vulkan ICD outside the loader's default search path.
[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] &&
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json

# step LIMIT_S TITLE COMMAND...: runs COMMAND under the smaller of LIMIT_S and what is left of
# the budget, appending its title, command line and output to lease.md; skipped when under 20 s
# are left, so the steps that matter most (first) always run.
step() {
  local limit=$1 title=$2
  shift 2
  local left=$((budget - SECONDS))
  ((left < limit)) && limit=$left
  if ((limit < 20)); then
    printf '\n## %s\n\nskipped: %d s of the budget left\n' "$title" "$left" | tee -a "$log"
    return
  fi
  printf '\n## %s\n\n```sh\n%s\n```\n\n' "$title" "$*" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  printf '\n(exit %d, %d s)\n' "${PIPESTATUS[0]}" $((SECONDS - start)) | tee -a "$log"
}

{
  echo "# GPU lease, $(date -u +%F)"
  echo
  echo "binary: $bin; host: $(nproc) CPU cores, $(uname -srm)"
  command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
} | tee "$log"
step 30 "adapters" "$bin" devices
step 120 "check, every adapter" "$bin" check --all-adapters
step 180 "bench: CPU and GPU, per-kernel profile, 8 packed" \
  "$bin" bench --devices cpu,gpu --batch-sizes 32,128,1024 --profile --pack 8 \
  --json "$out/bench.jsonl"
step 90 "CNN bench: configs/cnn.toml on the GPU, batch 128" \
  "$bin" bench --config configs/cnn.toml --devices gpu --batch-sizes 128 --warmup 1 --epochs 2
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  step 90 "CNN bench: PyTorch eager CUDA, the same network" \
    python3 bench/peers/torch_cnn.py --bench --device cuda --warmup 1 --epochs 2
fi
cnn=$(mktemp -d)
step 240 "CNN on the GPU: configs/cnn.toml, seed 1, to early stopping" "$bin" train \
  --config configs/cnn.toml --device gpu --set seed=1 --out "$cnn/seed1" --quiet
for f in summary.json metrics.csv; do
  [ -f "$cnn/seed1/$f" ] && cp "$cnn/seed1/$f" "$out/cnn-seed1-$f"
done
# Every arrangement, alternating, two rounds; the one kept goes to $out/tuning.toml, which only
# the next step reads (the knob-by-knob rounds after it start from the defaults).
step 90 "tune at batch 128" env WGTRAIN_TUNING_FILE="$out/tuning.toml" \
  "$bin" tune --batch-size 128
step 45 "bench with the tuned arrangement" env WGTRAIN_TUNING_FILE="$out/tuning.toml" \
  "$bin" bench --devices gpu --batch-sizes 32,128,1024
# Each tuning knob against the defaults, alternating, two rounds (ratios within this run only).
for round in 1 2; do
  for setting in WGTRAIN_DEFAULTS=1 WGTRAIN_FUSE_GATHER=0 WGTRAIN_TILE_K=32 WGTRAIN_TILE_K=64 \
    WGTRAIN_SUBMIT_EVERY=64 WGTRAIN_PREFETCH=1 WGTRAIN_TILE_K=64,WGTRAIN_PREFETCH=1; do
    # A comma joins settings that run together.
    step 45 "tuning, round $round: $setting" \
      env ${setting//,/ } "$bin" bench --devices gpu --batch-sizes 32,128,1024 --profile
  done
done
sweeps=$(mktemp -d)
step 240 "paper sweep, packed" "$bin" sweep configs/sweeps/paper.toml --device gpu \
  --out "$sweeps/packed"
[ -f "$sweeps/packed/results.md" ] && cp "$sweeps/packed/results.md" "$out/paper-results.md"
step 240 "paper sweep, one run at a time" "$bin" sweep configs/sweeps/paper.toml --device gpu \
  --pack 1 --out "$sweeps/one-at-a-time"
echo "total: $SECONDS s of a $budget s budget" | tee -a "$log"
