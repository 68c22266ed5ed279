#!/usr/bin/env bash
# Builds every component in components/ for wasm32-wasip2 (installing the target
# if missing). Output: target/wasm32-wasip2/release/<name>.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "==> installing the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
packages=()
for dir in components/*/; do
  name=$(basename "$dir")
  # Library crates (helpers for guests) are not components.
  grep -q 'crate-type = \["cdylib"\]' "$dir/Cargo.toml" && packages+=(-p "$name")
done
echo "==> building $(( ${#packages[@]} / 2 )) components for wasm32-wasip2"
cargo build --release --target wasm32-wasip2 "${packages[@]}"
