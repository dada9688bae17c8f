#!/usr/bin/env bash
# Every seedwatch benchmark from one command (README "Performance").
#
#   benches/run.sh            # all seven benchmarks and the DuckDB comparison
#   SEEDWATCH_BENCH_LOCATIONS=100 SEEDWATCH_BENCH_DAYS=175 benches/run.sh   # ~10 M events end to end
#   SEEDWATCH_BENCH_QUERY_EVENTS=10000000 benches/run.sh                      # a smaller query archive
#
# Results: criterion's report under $CARGO_TARGET_DIR/criterion, and
# $SEEDWATCH_BENCH_DIR/{e2e.txt,compare.json,kafka/}. Run it on an otherwise idle machine.
# The first run builds the 100 M-event query archive (~9 min, 2.5 GB, kept for later runs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/seedwatch-target}"
work="${SEEDWATCH_BENCH_DIR:-$HOME/.cache/seedwatch-bench}"
locations="${SEEDWATCH_BENCH_LOCATIONS:-20}"
days="${SEEDWATCH_BENCH_DAYS:-45}"
venv="${SEEDWATCH_VENV:-$HOME/.cache/seedwatch-venv}"
bin="$CARGO_TARGET_DIR/release/seedwatch"

if ! "$venv/bin/python" -c 'import duckdb' >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pyarrow duckdb
fi
command -v /usr/bin/time >/dev/null || { echo "run.sh: needs /usr/bin/time (Debian package 'time') for peak memory" >&2; exit 1; }

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== 1-3. criterion: decode, detect, archive (one core)"
cargo bench --locked --workspace --bench stages -- --noplot 2>&1 | grep -E '^(decode|detect|archive)/|time:|thrpt:|bytes/event'

cargo build --release --locked --workspace --quiet
mkdir -p "$work"
# Dated well in the past: lines dated after their arrival (plus --max-clock-skew) are dead-lettered.
start="${SEEDWATCH_BENCH_START:-2026-09-01}"
data="$work/data-$locations-$days-$start"
if [ ! -f "$data/events.ndjson" ]; then
  "$bin" generate --out "$data" --locations "$locations" --days "$days" --seed 7 --start "$start"
fi
events=$(wc -l < "$data/events.ndjson")
echo "== 4. embedded end to end: seedwatch run over $events events ($(du -h "$data/events.ndjson" | cut -f1))"
rm -rf "$work/archive-e2e"
/usr/bin/time -f "wall %e s, peak RSS %M KiB, %P CPU" "$bin" run --quiet --input "$data/events.ndjson" --archive "$work/archive-e2e" \
  --locations "$data/locations.csv" --roster "$data/roster.csv" --fingerprint-key "$work/fp.key" 2>&1 | tee "$work/e2e.txt" | grep -E '^read|wall'
echo "   archive bytes per event, by family:"
for table in login api sync audit; do
  rows=$("$bin" query --archive "$work/archive-e2e" --format csv "SELECT count(*) AS n FROM $table" | sed -n 2p)
  bytes=$(find "$work/archive-e2e/$table" -path "*=*" -not -path "*/_delta_log/*" -name "*.parquet" -printf "%s\n" | awk '{ s += $1 } END { print s + 0 }')
  awk -v t="$table" -v r="$rows" -v b="$bytes" 'BEGIN { if (r > 0) printf "   %-6s %10d events %12d bytes %6.1f bytes/event\n", t, r, b, b / r }'
done

echo "== side by side with DuckDB"
"$venv/bin/python" benches/compare.py "$bin" "$data" "$work"
benches/kafka.sh "$data" "$work"

echo "== 6. analyst queries over an archive of ${SEEDWATCH_BENCH_QUERY_EVENTS:-100000000} events"
SEEDWATCH_BENCH_DIR="$work" cargo bench --locked --workspace --quiet --bench query 2>&1 | grep -v '^query: building' | sed 's/^/   /'
"$venv/bin/python" benches/query_duckdb.py "$work/query-archive-v3-${SEEDWATCH_BENCH_QUERY_EVENTS:-100000000}" | sed 's/^/   /'

echo "== 7. detector state per tracked key, 1 M keys"
cargo bench --locked --workspace --quiet --bench state 2>&1 | sed 's/^/   /'
