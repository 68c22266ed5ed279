#!/usr/bin/env bash
# Runs the example app from an OCI registry: a private registry (Debian's
# docker-registry, CNCF distribution) on 127.0.0.1:$REGISTRY_PORT (5050)
# with a temporary store, the three components pushed to it with
# `membrane push`, then examples/insurance/colocated.toml with its sources
# turned into oci:// references.
#
#   scripts/run-example-oci.sh            # the host pulls from the registry
#   scripts/run-example-oci.sh --lattice  # `ctl apply` copies the components
#                                         # into a private NATS lattice; the
#                                         # host never speaks to the registry
#
# Either way the gateway answers on http://127.0.0.1:8080. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-registry}
rport=${REGISTRY_PORT:-5050}
registry=127.0.0.1:$rport
if [ "$mode" = --lattice ]; then
  port=${NATS_PORT:-4251}
  . scripts/private-nats.sh
else
  scripts/build-components.sh
  cargo test --release --all-targets --no-run
  pids=()
  cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
  trap cleanup EXIT INT TERM
fi
command -v docker-registry >/dev/null || { echo "needs docker-registry (apt-get install docker-registry)" >&2; exit 1; }
work=$(mktemp -d)
trap 'cleanup; rm -rf "$work"' EXIT INT TERM
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n  secret: example\n' \
  "$work/data" "$registry" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do (echo >/dev/tcp/127.0.0.1/"$rport") 2>/dev/null && break; sleep 0.1; done

membrane=target/release/membrane
for c in gateway rater pricing; do
  echo "==> membrane push $c.wasm oci://$registry/insurance/$c:0.1.0"
  $membrane push "target/wasm32-wasip2/release/$c.wasm" "oci://$registry/insurance/$c:0.1.0" \
    --insecure-registry "$registry" >/dev/null
done
sed -E "s|source = \"../../target/wasm32-wasip2/release/([a-z]+).wasm\"|source = \"oci://$registry/insurance/\1:0.1.0\"|" \
  examples/insurance/colocated.toml > "$work/app.toml"

if [ "$mode" = --lattice ]; then
  sed -i 's/^name = "insurance"$/name = "insurance"\nartifacts = "lattice"/' "$work/app.toml"
  $membrane ctl --nats "nats://127.0.0.1:$port" --lattice oci-demo --insecure-registry "$registry" apply "$work/app.toml"
  echo "==> one host joins the lattice, without registry access; try:"
  echo "    curl -s -X POST --data @examples/insurance/policy.json localhost:8080/quote"
  $membrane up --nats "nats://127.0.0.1:$port" --lattice oci-demo &
  pids+=($!)
  wait
else
  echo "==> try: curl -s -X POST --data @examples/insurance/policy.json localhost:8080/quote"
  $membrane up "$work/app.toml" --insecure-registry "$registry" &
  pids+=($!)
  wait
fi
