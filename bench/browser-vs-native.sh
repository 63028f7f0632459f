#!/usr/bin/env bash
# An epoch in the page against the native GPU path, on the same software adapter: the page in
# headless Chromium (WebGPU on its SwiftShader) and `wgtrain train --device gpu` on Chromium's
# own SwiftShader Vulkan driver (libvk_swiftshader.so, through VK_ICD_FILENAMES), alternating
# ROUNDS times, EPOCHS epochs of CONFIG each on the full data. Prints every epoch's seconds and
# the median of epochs 2.. (the first builds pipelines) for each, and their ratio.
#   bench/browser-vs-native.sh [CONFIG] [EPOCHS] [ROUNDS]     (after web/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-momentum} epochs=${2:-3} rounds=${3:-2}
icd=${SWIFTSHADER_ICD:-/usr/lib/chromium/vk_swiftshader_icd.json}
[ -f "$icd" ] || { echo "error: no SwiftShader ICD at $icd (hint: apt-get install chromium, or set SWIFTSHADER_ICD)" >&2; exit 1; }
cargo build -q --release --bin wgtrain
wgtrain=target/release/wgtrain
work=$(mktemp -d)
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
$wgtrain web --port 0 > "$work/server" &
server=$!
until grep -q http "$work/server" 2>/dev/null; do sleep 0.2; done
url=$(grep -o 'http://[^ ]*/' "$work/server" | head -1)

browser_epochs() { # the page's `wgtrain epoch {…}` lines → seconds, one per line
  local log="$work/chromium.log"
  chromium --headless=new --enable-unsafe-webgpu --use-webgpu-adapter=swiftshader \
    --enable-unsafe-swiftshader --no-sandbox --enable-logging=stderr --v=0 \
    --user-data-dir="$work/profile" "${url}?config=$config&epochs=$epochs&autorun=1" 2> "$log" &
  local pid=$!
  until grep -q '"wgtrain summary' "$log"; do sleep 1; done
  kill $pid; wait $pid 2>/dev/null || true
  grep -q '"error"' <(grep '"wgtrain summary' "$log") && { grep '"wgtrain summary' "$log" >&2; exit 1; }
  grep -o '"wgtrain epoch {[^}]*}' "$log" | sed 's/.*"seconds":\([0-9.e-]*\).*/\1/'
}
native_epochs() { # metrics.csv's seconds column
  VK_ICD_FILENAMES=$icd $wgtrain train --config "configs/$config.toml" --set "epochs=$epochs" \
    --device gpu --adapter swiftshader --out "$work/native" --force --quiet > /dev/null
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds") c = i; next } { print $c }' \
    "$work/native/metrics.csv"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

: > "$work/browser"; : > "$work/native_all"
for round in $(seq "$rounds"); do
  b=$(browser_epochs); n=$(native_epochs)
  echo "round $round: browser $(echo $b) s; native $(echo $n) s"
  echo "$b" | tail -n +2 >> "$work/browser"; echo "$n" | tail -n +2 >> "$work/native_all"
done
mb=$(median < "$work/browser"); mn=$(median < "$work/native_all")
echo "median epoch (epochs 2..$epochs): browser $mb s, native $mn s; browser/native $(awk "BEGIN { printf \"%.2f\", $mb / $mn }")"
echo "adapter: SwiftShader ($(VK_ICD_FILENAMES=$icd $wgtrain devices | grep -o 'SwiftShader[^|]*' | head -1)), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
