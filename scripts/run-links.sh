#!/usr/bin/env bash
# Runs the link-shortener example (examples/links) with a nats-server of its
# own (JetStream, a free store, port $NATS_PORT or 4251): its buckets and its
# click queue live in JetStream. `scripts/run-links.sh` serves colocated.toml
# on one host; `scripts/run-links.sh distributed` serves distributed.toml on
# two hosts labelled node=a and node=b. Either way the app answers on
# http://127.0.0.1:8090. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
layout=${1:-colocated}
case "$layout" in
  colocated) nodes=(a) ;;
  distributed) nodes=(b a) ;;
  *) echo "usage: $0 [colocated|distributed]" >&2; exit 2 ;;
esac
port=${NATS_PORT:-4251}
. scripts/private-nats.sh
for node in "${nodes[@]}"; do
  target/release/membrane up "examples/links/$layout.toml" \
    --nats "nats://127.0.0.1:$port" --lattice links --label "node=$node" 2>&1 | sed "s/^/[$node] /" &
  pids+=($!)
done
echo "==> $layout: try  curl -s -d 'https://example.com/' localhost:8090/api/links"
wait
