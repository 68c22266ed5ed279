# Sourced by the run-*.sh scripts: builds the components and the host, then
# starts a private nats-server (JetStream, a temporary store) on 127.0.0.1
# port $port and waits until it accepts connections. Processes appended to
# `pids` are stopped, and the store removed, when the calling script exits.
scripts/build-components.sh
cargo test --release --all-targets --no-run
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
store=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$store"; }
trap cleanup EXIT INT TERM
"$nats_bin" -js -a 127.0.0.1 -p "$port" -sd "$store" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
