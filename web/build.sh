#!/usr/bin/env bash
# Builds the page's wasm into web/pkg/ (what `wgtrain web` serves). Needs the wasm32 target
# and wasm-bindgen-cli of the version web/Cargo.toml pins:
#   rustup target add wasm32-unknown-unknown
#   cargo install wasm-bindgen-cli --version 0.2.130
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' web/Cargo.toml)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "error: web/build.sh needs wasm-bindgen $want (found: ${have:-none}) (hint: cargo install wasm-bindgen-cli --version $want)" >&2
  exit 1
fi
cargo build --release --target wasm32-unknown-unknown -p wgtrain-web
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  target/wasm32-unknown-unknown/release/wgtrain_web.wasm
echo "built web/pkg; serve it with: wgtrain web"
