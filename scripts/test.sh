#!/usr/bin/env bash
# The whole test suite, on a machine with only the Rust toolchain: installs what
# the tests need, builds the components once, then runs formatting, lints and
# every test of the workspace (in release: wasmtime compiles guests far faster
# when Cranelift itself is optimised, and the tests share the binary that
# `scripts/run-example.sh` builds).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-components.sh

# Debian packages the tests use: nats-server (the NATS tests start their
# own), mosquitto and its clients (the MQTT tests start their own broker),
# prometheus (promtool checks /metrics), chromium (the status page is
# tested in a real browser), curl (the HTTP/2, TLS and README tours use the
# real client), openssl (a self-signed certificate for the TLS test),
# docker-registry (CNCF distribution: the OCI tests start their own) and
# apache2-utils (its htpasswd writes the registry's users).
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The lattice console's page: built from console/src with the pinned
# packages (and playwright-core, which its browser test drives Chromium
# with). The bundle is committed, so that a cargo build needs no npm: it
# must be what the sources build.
scripts/build-console.sh
git diff --exit-code --stat -- console/dist ||
  { echo "console/dist differs from what console/src builds: run scripts/build-console.sh and commit it" >&2; exit 1; }

echo "==> cargo fmt --check"
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
cargo fmt --all -- --check
# Components with a workspace of their own (see the root Cargo.toml's exclude).
standalone=$(grep -l '^\[workspace\]' components/*/Cargo.toml || true)
for manifest in $standalone; do cargo fmt --manifest-path "$manifest" -- --check; done

echo "==> cargo clippy"
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
cargo clippy --release --all-targets -- -D warnings
members=$(for d in components/*/; do grep -q '^\[workspace\]' "$d/Cargo.toml" || printf -- '-p %s ' "$(basename "$d")"; done)
cargo clippy --release --target wasm32-wasip2 $members -- -D warnings
for manifest in $standalone; do
  cargo clippy --release --target wasm32-wasip2 --manifest-path "$manifest" --target-dir target -- -D warnings
done

# One build for the tests and the benches: the same command, package
# selection and profile (`cargo bench -p membrane-benches` would resolve
# other features of the shared dependencies and build the host again).
echo "==> cargo test (building the tests and the benches)"
cargo test --release --all-targets --no-run
cargo test --release

# The modules that talk to NATS again, on a current nats-server (the suite
# above runs on Debian's 2.9): the lattice, control plane, JetStream cluster,
# leaf, partition, queue and media, key-value, registry and security
# modules (the partition test needs 2.10 or newer).
echo "==> the NATS modules on a current nats-server"
current=$(scripts/install-nats-current.sh)
"$current" --version
MEMBRANE_NATS_SERVER=$current cargo test --release --test it -- \
  lattice:: control:: cluster:: leaf:: partition:: keyvalue:: security:: attack:: hostile:: media:: registry:: churn::

# The layouts bench in its short mode, so the harness keeps working. It
# asserts no timings; it writes its report under target/release/. Run
# through `cargo test` so that it is the binary built above.
echo "==> layouts bench (--quick)"
cargo test --release --bench layouts -- --quick
