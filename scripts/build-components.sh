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
standalone=()
for dir in components/*/; do
  name=$(basename "$dir")
  # A component with a workspace (and lockfile) of its own builds alone.
  if grep -q '^\[workspace\]' "$dir/Cargo.toml"; then standalone+=("$dir"); continue; fi
  # Library crates (helpers for guests) are not components.
  grep -q 'crate-type = \["cdylib"\]' "$dir/Cargo.toml" && packages+=(-p "$name")
done
echo "==> building $(( ${#packages[@]} / 2 )) components for wasm32-wasip2"
cargo build --release --target wasm32-wasip2 "${packages[@]}"
for dir in "${standalone[@]}"; do
  echo "==> building $(basename "$dir") (its own workspace)"
  cargo build --release --target wasm32-wasip2 --manifest-path "$dir/Cargo.toml" --target-dir target
done
