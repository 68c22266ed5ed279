#!/usr/bin/env bash
# Runs the example app on one host with no broker: installs the wasm32-wasip2
# target if missing, builds the components and the host, and serves
# examples/insurance/colocated.toml on http://127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-components.sh
echo "==> building the membrane host"
cargo build --release -p membrane
exec target/release/membrane up examples/insurance/colocated.toml "$@"
