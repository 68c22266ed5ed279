#!/usr/bin/env bash
# Start-up of the co-located insurance example with composed against
# dynamic links: the time from `membrane up` to its first answered POST
# /quote, cold (an empty compile cache: every component compiled, and the
# composition built and compiled) and warm (the cache of the cold start),
# and the host's resident memory once it answers. Alternates the two
# layouts, ROUNDS times, and prints each start and the medians with their
# spread.
#
#   scripts/bench-start.sh [ROUNDS]
#
# Needs target/release/membrane (`cargo test --release --all-targets
# --no-run` builds it), the components (scripts/build-components.sh) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
bin=target/release/membrane
wasm=$PWD/target/wasm32-wasip2/release
[ -x "$bin" ] || { echo "needs $bin: cargo test --release --all-targets --no-run" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
policy=$(tr -d '\n' < examples/insurance/policy.json)
port=$((20000 + RANDOM % 20000))

for kind in composed dynamic; do
  sed -e "s|../../target/wasm32-wasip2/release/\(.*\)\.wasm\"|$wasm/\1.wasm\"|" \
      -e "s|127.0.0.1:8080|127.0.0.1:$port|" \
      -e "s|^name = \"insurance\"|name = \"insurance\"\nlinks = \"$kind\"|" \
      examples/insurance/colocated.toml > "$work/$kind.toml"
done

# start KIND CACHE -> "milliseconds rss_kib", the host stopped again
start() {
  local t0 t1 pid rss
  t0=$(date +%s%N)
  "$bin" up "$work/$1.toml" --cache-dir "$2" > "$work/$1.log" 2>&1 &
  pid=$!
  until curl -sf -o /dev/null -X POST -H 'content-type: application/json' -d "$policy" "http://127.0.0.1:$port/quote"; do
    kill -0 "$pid" 2>/dev/null || { echo "membrane exited:" >&2; cat "$work/$1.log" >&2; exit 1; }
    sleep 0.01
  done
  t1=$(date +%s%N)
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  echo "$(( (t1 - t0) / 1000000 )) $rss"
}

declare -A ms kib
for round in $(seq 1 "$rounds"); do
  for kind in composed dynamic; do
    rm -rf "$work/cache-$kind"
    read -r t r < <(start "$kind" "$work/cache-$kind")
    ms[$kind-cold]+="$t "; kib[$kind-cold]+="$r "
    read -r w s < <(start "$kind" "$work/cache-$kind")
    ms[$kind-warm]+="$w "; kib[$kind-warm]+="$s "
    echo "round $round  $kind  cold ${t} ms (${r} KiB)  warm ${w} ms (${s} KiB)"
  done
done
grep -h "composed .* in " "$work"/composed.log | sed 's/^.*INFO //; s/^/  /' || true

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f (%.0f-%.0f)", m, a[1], a[NR]}'; }
echo
for start in cold warm; do
  for kind in composed dynamic; do
    echo "$start  $kind: $(echo "${ms[$kind-$start]}" | median) ms to the first quote, RSS $(echo "${kib[$kind-$start]}" | median) KiB"
  done
  c=$(echo "${ms[composed-$start]}" | median | cut -d' ' -f1)
  d=$(echo "${ms[dynamic-$start]}" | median | cut -d' ' -f1)
  awk -v c="$c" -v d="$d" -v s="$start" 'BEGIN {printf "%s  composed/dynamic %.2fx\n", s, c/d}'
done
