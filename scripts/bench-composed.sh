#!/usr/bin/env bash
# Composed against dynamic links, beside one wasi:http component: the
# co-located insurance example (POST /quote, gateway -> rater -> pricing)
# with `links = "composed"` and `links = "dynamic"`, and the echo component
# alone, each served by `membrane up` and loaded by wrk at c=64, in
# alternating rounds in one sitting; kept (`reuse = 1000`) and fresh
# instances. With the `wasmtime` CLI of the host's wasmtime version on PATH
# (scripts/install-peers.sh), `wasmtime serve` of the same echo.wasm joins
# the rounds (`--max-instance-reuse-count 1000` kept, its default fresh).
# Prints each round and the medians with their spread.
#
#   scripts/bench-composed.sh [ROUNDS] [SECONDS]
#
# Needs target/release/membrane (`cargo test --release --all-targets
# --no-run` builds it), the components (scripts/build-components.sh) and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-8}
bin=target/release/membrane
wasm=$PWD/target/wasm32-wasip2/release
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
[ -x "$bin" ] || { echo "needs $bin: cargo test --release --all-targets --no-run" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

policy=$(tr -d '\n' < examples/insurance/policy.json)
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [==[$policy]==]
wrk.headers["content-type"] = "application/json"
LUA

# manifest NAME KIND(composed|dynamic|echo) STRATEGY(reuse|fresh) PORT
manifest() {
  local reuse=""; [ "$3" = reuse ] && reuse='\nreuse = 1000'
  if [ "$2" = echo ]; then
    printf "[app]\nname = \"echo\"\n[components.echo]\nsource = \"%s/echo.wasm\"$reuse\n[[bindings]]\nmedium = \"http\"\naddress = \"127.0.0.1:%s\"\ncomponent = \"echo\"\n" \
      "$wasm" "$4" > "$work/$1.toml"
    return
  fi
  sed -e "s|../../target/wasm32-wasip2/release/\(.*\)\.wasm\"|$wasm/\1.wasm\"$reuse|" \
      -e "s|127.0.0.1:8080|127.0.0.1:$4|" \
      -e "s|^name = \"insurance\"|name = \"insurance\"\nlinks = \"$2\"|" \
      examples/insurance/colocated.toml > "$work/$1.toml"
}

kinds="composed dynamic echo"
want=$(awk '$0 == "name = \"wasmtime\"" { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
if command -v wasmtime >/dev/null && [ "$(wasmtime --version | awk '{print $2}')" = "$want" ]; then
  kinds="$kinds serve"
else
  echo "no wasmtime $want on PATH (scripts/install-peers.sh): the \`wasmtime serve\` rows are skipped"
fi

port=18500
declare -A results
for strategy in reuse fresh; do
  for kind in $kinds; do
    port=$((port + 1))
    if [ "$kind" = serve ]; then
      reuse=(); [ "$strategy" = reuse ] && reuse=(--max-instance-reuse-count 1000)
      wasmtime serve -S cli=y "${reuse[@]}" --addr "127.0.0.1:$port" "$wasm/echo.wasm" > "$work/$kind-$strategy.log" 2>&1 &
    else
      manifest "$kind-$strategy" "$kind" "$strategy" "$port"
      "$bin" up "$work/$kind-$strategy.toml" --cache-dir "$work/cache" > "$work/$kind-$strategy.log" 2>&1 &
    fi
    echo "$! $port" > "$work/$kind-$strategy.pid"
  done
done
for f in "$work"/*.pid; do
  read -r _ p < "$f"
  for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
grep -h "composed links" "$work"/*.log | sed 's/^/  /' || true

run() { # KIND STRATEGY -> req/s
  local p path script=()
  read -r _ p < "$work/$1-$2.pid"
  script=(-s "$work/post.lua")
  case "$1" in echo | serve) path=/ ;; *) path=/quote ;; esac
  wrk -t2 -c64 -d"${secs}s" "${script[@]}" "http://127.0.0.1:$p$path" | awk '/Requests\/sec/ {print $2}'
}

for round in $(seq 1 "$rounds"); do
  for strategy in reuse fresh; do
    for kind in $kinds; do
      r=$(run "$kind" "$strategy")
      results[$kind-$strategy]+="$r "
      echo "round $round  $strategy  $kind  $r req/s"
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f (%.0f-%.0f)", m, a[1], a[NR]}'; }
echo
for strategy in reuse fresh; do
  for kind in $kinds; do
    echo "$strategy  $kind: $(echo "${results[$kind-$strategy]}" | median) req/s"
  done
  c=$(echo "${results[composed-$strategy]}" | median | cut -d' ' -f1)
  d=$(echo "${results[dynamic-$strategy]}" | median | cut -d' ' -f1)
  e=$(echo "${results[echo-$strategy]}" | median | cut -d' ' -f1)
  awk -v c="$c" -v d="$d" -v e="$e" -v s="$strategy" 'BEGIN {printf "%s  composed/echo %.2fx  dynamic/echo %.2fx  composed/dynamic %.2fx\n", s, c/e, d/e, c/d}'
  if [[ $kinds == *serve* ]]; then
    w=$(echo "${results[serve-$strategy]}" | median | cut -d' ' -f1)
    awk -v e="$e" -v w="$w" -v s="$strategy" 'BEGIN {printf "%s  echo/wasmtime serve %.2fx\n", s, e/w}'
  fi
done
