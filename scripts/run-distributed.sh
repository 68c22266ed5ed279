#!/usr/bin/env bash
# Runs examples/insurance/distributed.toml locally: one nats-server (JetStream,
# its own port and store) and three hosts labelled node=a, node=b, node=c, on
# loopback. The gateway answers on http://127.0.0.1:8080, as in the co-located
# layout. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${NATS_PORT:-4250}
. scripts/private-nats.sh
# Callees first, so the gateway's first request finds them.
for node in c b a; do
  target/release/membrane up examples/insurance/distributed.toml \
    --nats "nats://127.0.0.1:$port" --lattice demo --label "node=$node" 2>&1 | sed "s/^/[$node] /" &
  pids+=($!)
  sleep 1
done
echo "==> three hosts up; try: curl -s -X POST --data @examples/insurance/policy.json localhost:8080/quote"
wait
