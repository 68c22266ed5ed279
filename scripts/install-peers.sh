#!/usr/bin/env bash
# Installs the peers the layouts bench measures beside Membrane when they are
# on PATH: today the `wasmtime` CLI, at exactly the version of the `wasmtime`
# crate in Cargo.lock, so `wasmtime serve` runs the same engine as the host.
# Without it the bench skips the `wasmtime serve` rows and says so.
#
# Not part of scripts/test.sh (CI does not need the peer rows): it compiles
# wasmtime-cli from crates.io, about 15 minutes on 2 cores. Set
# CARGO_TARGET_DIR to keep that build out of this checkout's target/.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(awk '$0 == "name = \"wasmtime\"" { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
[ -n "$version" ] || { echo "error: no wasmtime crate in Cargo.lock" >&2; exit 1; }

installed() { command -v wasmtime >/dev/null && wasmtime --version | awk '{ print $2 }'; }

have=$(installed || true)
if [ "$have" = "$version" ]; then
  echo "==> wasmtime $version already on PATH ($(command -v wasmtime))"
  exit 0
fi
echo "==> installing wasmtime-cli $version${have:+ (PATH has $have)}: compiles from crates.io, ~15 minutes on 2 cores"
cargo install --locked --quiet wasmtime-cli --version "$version"
have=$(installed || true)
if [ "$have" != "$version" ]; then
  echo "error: \`wasmtime --version\` on PATH says '${have:-nothing}', not $version: is ${CARGO_HOME:-$HOME/.cargo}/bin first on PATH?" >&2
  exit 1
fi
echo "==> wasmtime $version installed ($(command -v wasmtime))"
