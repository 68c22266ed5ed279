#!/usr/bin/env bash
# Checks the `cargo component build` route for one component (pricing): the
# same crate that `cargo build --target wasm32-wasip2` builds must also build
# with cargo-component, and the result must be a component the host accepts.
#
# Not part of scripts/test.sh: installing cargo-component compiles it from
# crates.io (about 10 minutes on 2 cores). Run it when touching component
# crates or their WIT.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-component >/dev/null; then
  echo "==> installing cargo-component (once; ~10 minutes)"
  cargo install cargo-component --locked
fi
echo "==> cargo component build --release -p pricing"
(cd components/pricing && cargo component build --release)
out=target/wasm32-wasip1/release/pricing.wasm
[ -f "$out" ] || { echo "error: $out was not produced" >&2; exit 1; }
# A component's header is \0asm + version 0x0d 0x00 + layer 0x01 0x00.
header=$(head -c 8 "$out" | od -An -tx1 | tr -d ' \n')
[ "$header" = "0061736d0d000100" ] || { echo "error: $out is not a component (header $header)" >&2; exit 1; }

echo "==> serving it with membrane"
cargo test --release --all-targets --no-run
manifest=$(mktemp --suffix=.toml)
trap 'rm -f "$manifest"' EXIT
sed -e "s#../../target/wasm32-wasip2/release/pricing.wasm#$PWD/$out#" \
    -e "s#../../target/wasm32-wasip2/release/#$PWD/target/wasm32-wasip2/release/#g" \
    -e "s#127.0.0.1:8080#127.0.0.1:0#" examples/insurance/colocated.toml > "$manifest"
scripts/build-components.sh >/dev/null
log=$(mktemp)
target/release/membrane up "$manifest" 2>"$log" &
pid=$!
for _ in $(seq 1 100); do grep -q " ready: " "$log" && break; sleep 0.1; done
addr=$(grep -o 'serving http://[0-9.:]*' "$log" | head -1 | sed 's#serving http://##')
reply=$(curl -sf -X POST --data @examples/insurance/policy.json "http://$addr/quote")
kill -INT $pid; wait $pid || true
echo "$reply" | grep -q '"premium":936.92' || { echo "error: unexpected reply: $reply" >&2; cat "$log" >&2; exit 1; }
echo "ok: cargo-component build of pricing serves the example ($reply)"
