#!/usr/bin/env bash
# Fuzz the harnesses of src/fuzzing.rs with libFuzzer (cargo-fuzz, nightly): every target, or
# those named, for FUZZ_SECONDS each (default 60; a long run: FUZZ_SECONDS=3600).
#
#   scripts/fuzz.sh                  # all targets, a minute each
#   FUZZ_SECONDS=600 scripts/fuzz.sh ndjson intake_body
#
# New inputs go to a working corpus outside the clone ($FUZZ_WORK, seeded from fuzz/corpus/);
# a crash is written to fuzz/artifacts/<target>/. Copy a crash into fuzz/corpus/<target>/ and
# tests/fuzz_replay.rs replays it in every test run from then on (the regression test).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(ndjson nginx redactor rule policy exceptions reference intake_body)
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi
work=${FUZZ_WORK:-$HOME/.cache/seedwatch-fuzz-corpus}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/seedwatch-fuzz-target}
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "fuzz/corpus/$target"
  echo "fuzz.sh: $target for ${seconds}s"
  cargo +nightly fuzz run "$target" "$work/$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10
done
