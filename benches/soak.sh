#!/usr/bin/env bash
# The soak test for longer than CI runs it: the generator's data at a steady rate through a
# following collector, a tansu broker and two detectors, for SEEDWATCH_SOAK_SECONDS (default
# 1800), checking zero loss, zero duplicates, unchanged findings and flat detector memory.
# Needs what ./scripts/test.sh installs (tansu, the Python virtualenv).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/seedwatch-target}
export SEEDWATCH_PYTHON=${SEEDWATCH_PYTHON:-$HOME/.cache/seedwatch-venv/bin/python}
export SEEDWATCH_SOAK_SECONDS=${SEEDWATCH_SOAK_SECONDS:-1800}
exec cargo test --release --locked --workspace --test kafka_detect -- --exact soak_a_steady_stream_through_collector_broker_and_two_detectors --nocapture
