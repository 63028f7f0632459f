#!/usr/bin/env bash
# Everything to measure when a real GPU is at hand, in one go (about 5 minutes on an H100):
# adapters, the GPU-vs-CPU check (packing included), the bench with the per-kernel profile and
# 8 models packed against one after another at three batch sizes, the gather fusion on and
# off, and the paper sweep packed and one run at a time. Results go to $OUT (or ./gpu-lease-out); copy the tables into
# BENCHMARKS.md and RESULTS.md with the machine, driver, command and date.
#   bench/gpu-lease.sh [WGTRAIN_BINARY]
# On a bare machine without a Vulkan loader, put its .deb files (libvulkan1, and libegl1 for
# GL) in .gl/ beside the repository root and they are unpacked first.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/wgtrain}
out=${OUT:-gpu-lease-out}
mkdir -p "$out"
if compgen -G ".gl/*.deb" >/dev/null; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
# NVIDIA containers keep the Vulkan ICD outside the loader's default search path.
[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] &&
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
"$bin" devices 2>&1 | tee "$out/devices.md"
timeout 300 "$bin" check --all-adapters 2>&1 | tee "$out/check.md"
timeout 900 "$bin" bench --devices cpu,gpu --batch-sizes 32,128,1024 --profile --pack 8 \
  --json "$out/bench.jsonl" 2>&1 | tee "$out/bench.md"
# The gather fused into the first matmul (the default) and in a dispatch of its own.
for fuse in 0 1; do
  WGTRAIN_FUSE_GATHER=$fuse timeout 300 "$bin" bench --devices gpu --batch-sizes 32,128,1024 \
    --profile 2>&1 | tee "$out/bench-fuse-gather-$fuse.md"
done
for pack in auto 1; do
  args=(); [ "$pack" = 1 ] && args=(--pack 1)
  SECONDS=0
  timeout 900 "$bin" sweep configs/sweeps/paper.toml --device gpu "${args[@]}" \
    --out "$out/paper-pack-$pack" >"$out/paper-pack-$pack.log" 2>&1
  echo "paper sweep, pack $pack: ${SECONDS} s (exit $?)" | tee -a "$out/sweep-times.txt"
done
