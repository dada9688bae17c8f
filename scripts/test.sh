#!/usr/bin/env bash
# The whole seedwatch test suite, from a fresh clone.
#
# Installs what the tests need (pyarrow and DuckDB in a virtualenv, for the
# interoperability test that reads our Parquet with another engine), builds
# once in the release profile (the same one the demo and benches use) and
# runs every test. Fails loudly when something cannot be installed: no test
# skips itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are shared between clones and CI runs on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/seedwatch-target}"
venv="${SEEDWATCH_VENV:-$HOME/.cache/seedwatch-venv}"

if ! "$venv/bin/python" -c 'import pyarrow, duckdb' >/dev/null 2>&1; then
  echo "test.sh: installing pyarrow and duckdb into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pyarrow duckdb
fi
export SEEDWATCH_PYTHON="$venv/bin/python"
"$SEEDWATCH_PYTHON" -c 'import pyarrow, duckdb; print("test.sh: pyarrow", pyarrow.__version__, "duckdb", duckdb.__version__)'

echo "test.sh: building and running the tests (release profile, target dir $CARGO_TARGET_DIR)"
cargo test --release --locked --workspace --no-fail-fast "$@"

echo "test.sh: checking the shipped rules"
"$CARGO_TARGET_DIR/release/seedwatch" rules check --rules rules

echo "test.sh: running every rule over its fixtures"
"$CARGO_TARGET_DIR/release/seedwatch" rules test --rules rules
