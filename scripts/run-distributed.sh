#!/usr/bin/env bash
# Runs examples/insurance/distributed.toml locally: one nats-server (JetStream,
# its own port and store) and three hosts labelled node=a, node=b, node=c, on
# loopback. The gateway answers on http://127.0.0.1:8080, as in the co-located
# layout. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-components.sh
cargo build --release -p membrane
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
port=${NATS_PORT:-4250}
store=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$store"; }
trap cleanup EXIT INT TERM
"$nats_bin" -js -a 127.0.0.1 -p "$port" -sd "$store" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
# Callees first, so the gateway's first request finds them.
for node in c b a; do
  target/release/membrane up examples/insurance/distributed.toml \
    --nats "nats://127.0.0.1:$port" --lattice demo --label "node=$node" 2>&1 | sed "s/^/[$node] /" &
  pids+=($!)
  sleep 1
done
echo "==> three hosts up; try: curl -s -X POST --data @examples/insurance/policy.json localhost:8080/quote"
wait
