#!/usr/bin/env bash
# Counts the instructions one HTTP request costs a `membrane up` host, with
# callgrind (instructions, not seconds: the count repeats on a busy machine).
# Starts the host under valgrind, waits until it answers, zeroes the
# counters, sends N keep-alive requests one at a time with ab, dumps the
# counters and prints the total divided by N and the functions that cost the
# most per request (inclusive).
#
#   scripts/profile-http.sh echo|composed|dynamic [N] [reuse|fresh]
#
# echo: the echo component alone (POST /); composed and dynamic: the
# co-located insurance example (POST /quote) with that link mode. The
# profile stays in $OUT (default /tmp/membrane-profile) for
# callgrind_annotate. Needs target/release/membrane, the components,
# valgrind and ab (apache2-utils).
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-echo}
n=${2:-2000}
strategy=${3:-reuse}
out=${OUT:-/tmp/membrane-profile}
bin=target/release/membrane
wasm=$PWD/target/wasm32-wasip2/release
for tool in valgrind callgrind_control callgrind_annotate ab; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install valgrind apache2-utils)" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "needs $bin: cargo test --release --all-targets --no-run" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
reuse=""; [ "$strategy" = reuse ] && reuse='\nreuse = 1000'
case "$kind" in
  echo)
    printf "[app]\nname = \"echo\"\n[components.echo]\nsource = \"%s/echo.wasm\"$reuse\n[[bindings]]\nmedium = \"http\"\naddress = \"127.0.0.1:%s\"\ncomponent = \"echo\"\n" \
      "$wasm" "$port" > "$work/app.toml"
    path=/ ;;
  composed|dynamic)
    sed -e "s|../../target/wasm32-wasip2/release/\(.*\)\.wasm\"|$wasm/\1.wasm\"$reuse|" \
        -e "s|127.0.0.1:8080|127.0.0.1:$port|" \
        -e "s|^name = \"insurance\"|name = \"insurance\"\nlinks = \"$kind\"|" \
        examples/insurance/colocated.toml > "$work/app.toml"
    path=/quote ;;
  *) echo "kind: echo, composed or dynamic" >&2; exit 2 ;;
esac
tr -d '\n' < examples/insurance/policy.json > "$work/body.json"

# Compile outside valgrind first, so the profiled host starts from the cache.
"$bin" up "$work/app.toml" --cache-dir "$work/cache" > "$work/warm.log" 2>&1 &
warm=$!
for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
kill "$warm"; wait "$warm" 2>/dev/null || true

file="$out/$kind-$strategy.callgrind"
rm -f "$file" "$file".*
valgrind --tool=callgrind --callgrind-out-file="$file" --dump-instr=no \
  "$bin" up "$work/app.toml" --cache-dir "$work/cache" > "$work/host.log" 2>&1 &
host=$!
for _ in $(seq 1 1200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.25; done
# A few requests first, so the counted ones find connections and instances warm.
ab -q -k -n 50 -c 1 -p "$work/body.json" -T application/json "http://127.0.0.1:$port$path" > /dev/null
callgrind_control -z "$host" > /dev/null
ab -q -k -n "$n" -c 1 -p "$work/body.json" -T application/json "http://127.0.0.1:$port$path" > "$work/ab.txt"
callgrind_control -d "$host" > /dev/null
kill -INT "$host"; wait "$host" 2>/dev/null || true
grep -E "^(Complete|Failed|Non-2xx)" "$work/ab.txt" | sed 's/^/  /'
# callgrind_control -d writes FILE.1: the counted requests only.
dump="$file.1"
set +o pipefail  # head closes the pipes early
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
echo "$kind ($strategy): $total instructions for $n requests: $((total / n)) per request ($dump)"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | head -60 |
  awk -v n="$n" 'NR > 2 && $1 ~ /^[0-9,]+$/ { c = $1; gsub(",", "", c); printf "%9d  %s\n", c / n, substr($0, index($0, $3)) }' | head -45
