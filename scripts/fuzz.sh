#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer with AddressSanitizer) of
# what a host decodes from outside: the wire codec, the JSON codec, the
# manifest, chunk reassembly, NATS headers and reply subjects, and the
# forwarded-HTTP framing. Each target runs for FUZZ_SECONDS (default 60)
# from its committed corpus (fuzz/corpus/<target>), which grows as it runs.
#
#   scripts/fuzz.sh                  # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh wire json
#
# cargo fuzz wants a nightly compiler for its sanitizer flags; on the stable
# toolchain RUSTC_BOOTSTRAP=1 lets them through. Not part of CI (its time
# budget); a crash is written to fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-components.sh >/dev/null   # the targets read echo.wasm's types
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(wire json manifest chunks headers forward)
cd fuzz
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" target
  echo "==> fuzzing $target for ${seconds} s"
  cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
    tee "target/fuzz-$target.log" | grep -E '^#[0-9]+.*(DONE|pulse)|stat::|ERROR|panicked' || true
  # A crash leaves an artifact and makes libFuzzer exit non-zero.
  if ls "artifacts/$target"/crash-* "artifacts/$target"/oom-* "artifacts/$target"/leak-* >/dev/null 2>&1; then
    echo "fuzz target $target found a failure: fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
