#!/usr/bin/env bash
# Runs the example app on one host with no broker: installs the wasm32-wasip2
# target if missing, builds the components and the host, and serves
# examples/insurance/colocated.toml on http://127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-components.sh
# The same command, package selection and profile as scripts/test.sh, so
# the example and the tests share one build of the host (`cargo build -p
# membrane` would resolve other features and build it again).
echo "==> building the membrane host (with its tests: scripts/test.sh reuses the build)"
cargo test --release --all-targets --no-run
exec target/release/membrane up examples/insurance/colocated.toml "$@"
