#!/usr/bin/env bash
# The Kafka deployment end to end: seedwatch collect → tansu → seedwatch detect → archive.
# Called by benches/run.sh; alone: benches/kafka.sh DATA_DIR WORK_DIR
# Prints, against one local tansu in one run: the transport's own ceiling (benches/transport.rs:
# the same lines produced then consumed, unparsed), the collector's rate, the detector's rate
# from start to the last event archived (with its CPU time), end to end against the ceiling, and
# one HTTP intake replica's rate (benches/intake.rs: the same lines posted, plain and gzip).
# SEEDWATCH_BENCH_PROFILE=1 also records a perf profile of the detector ($WORK_DIR/kafka/detect.perf).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/seedwatch-target}"
bin="${SEEDWATCH_BIN:-$CARGO_TARGET_DIR/release/seedwatch}"
data="$1"
work="$2"
partitions="${SEEDWATCH_BENCH_PARTITIONS:-4}"
command -v tansu >/dev/null || { echo "kafka.sh: needs tansu (cargo install tansu --locked --features dynostore,libsql)" >&2; exit 1; }

dir="$work/kafka"
rm -rf "$dir" && mkdir -p "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
broker="127.0.0.1:$port"
(cd "$dir" && exec tansu broker --listener-url "tcp://$broker" --advertised-listener-url "tcp://$broker" --storage-engine memory://tansu/ >tansu.log 2>&1) &
tansu_pid=$!
detect_pid=""
intake_pid=""
cleanup() { for p in "$detect_pid" "$intake_pid"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; kill "$tansu_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$bin" topics create --brokers "$broker" --partitions "$partitions" >/dev/null

lines=$(wc -l < "$data/events.ndjson")
echo "== 5. Kafka end to end, $lines lines, $partitions partitions, tansu on this machine"
SEEDWATCH_BENCH_BROKERS="$broker" SEEDWATCH_BENCH_INPUT="$data/events.ndjson" SEEDWATCH_BENCH_PARTITIONS="$partitions" \
  cargo bench --locked --workspace --quiet --bench transport 2>"$dir/transport.err" | tee "$dir/transport.txt" | sed 's/^/   /'
ceiling=$(sed -n 's/^transport\/ceiling: produce then consume \([0-9.]*\) s.*/\1/p' "$dir/transport.txt")
[ -n "$ceiling" ] || { echo "kafka.sh: the transport ceiling did not run" >&2; exit 1; }
"$bin" keys init --fingerprint-key "$work/fp.key" --signing-key "$work/signing.pem" >/dev/null
collect_start=$(date +%s.%N)
/usr/bin/time -f "   collect: wall %e s, peak RSS %M KiB, %P CPU" "$bin" collect file --input "$data/events.ndjson" --brokers "$broker" --fingerprint-key "$work/fp.key" 2>&1 | sed 's/^/   /'
collect_end=$(date +%s.%N)

rules=(--locations "$data/locations.csv" --roster "$data/roster.csv")
start=$(date +%s.%N)
"$bin" detect --quiet --brokers "$broker" --archive "$dir/archive" --fingerprint-key "$work/fp.key" "${rules[@]}" 2>"$dir/detect.log" &
detect_pid=$!
perf_pid=""
if [ -n "${SEEDWATCH_BENCH_PROFILE:-}" ]; then
  # A CPU profile of the detector for this run (perf report -i "$dir/detect.perf").
  perf record -F 999 -g -p "$detect_pid" -o "$dir/detect.perf" >/dev/null 2>&1 &
  perf_pid=$!
fi
expected=$(grep -c '"family"' "$data/events.ndjson" || true)
archived=0
# Bad lines can mention "family" too; stop when the count stops moving at (or above) the decodable lines.
for _ in $(seq 600); do
  sleep 1
  [ -d "$dir/archive" ] || continue
  now=$("$bin" query --archive "$dir/archive" --format csv "SELECT (SELECT count(*) FROM login) + (SELECT count(*) FROM api) + (SELECT count(*) FROM sync) + (SELECT count(*) FROM audit) AS n" 2>/dev/null | sed -n 2p)
  if [ -n "$now" ] && [ "$now" = "$archived" ] && [ "$now" -gt 0 ] && [ "$now" -ge $((expected - 100)) ]; then break; fi
  archived="${now:-0}"
done
# The end is when the last events became durable: the newest event file renamed into the archive
# at a commit (its ctime), not when this loop noticed.
end=$(find "$dir/archive/login" "$dir/archive/api" "$dir/archive/sync" "$dir/archive/audit" -name '*.parquet' -printf '%C@\n' 2>/dev/null | sort -n | tail -1)
if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
ps -o rss= -p "$detect_pid" | awk '{printf "   detector RSS now %d MiB\n", $1 / 1024}'
# CPU against wall: how much of the detector's time was work rather than waiting on the broker.
awk -v hz="$(getconf CLK_TCK)" -v s="$start" -v e="$end" '{ printf "   detector CPU %.1f s (user %.1f, system %.1f) in %.1f s wall\n", ($14 + $15) / hz, $14 / hz, $15 / hz, e - s }' "/proc/$detect_pid/stat"
awk -v n="$archived" -v s="$start" -v e="$end" -v cs="$collect_start" -v ce="$collect_end" -v lines="$lines" -v ceiling="$ceiling" 'BEGIN {
  d = e - s; c = ce - cs
  printf "   detect: %d events archived in %.1f s (%.0f events/s, one detector, group join and poll overhead included)\n", n, d, n / d
  printf "   end to end: collect %.1f s + detect %.1f s = %.0f events/s; transport ceiling %.0f messages/s; %.0f%% of it\n", c, d, lines / (c + d), lines / ceiling, 100 * ceiling / (c + d)
}'

# One intake replica, on topics of its own so the detector's figures above are untouched.
"$bin" topics create --brokers "$broker" --partitions "$partitions" --topic-prefix intake-bench >/dev/null
token="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
printf 'tokens:\n  - name: bench\n    sha256: %s\n    licenses: ["*"]\n' "$(printf '%s' "$token" | sha256sum | cut -c1-64)" >"$dir/tokens.yaml"
"$bin" collect http --listen 127.0.0.1:0 --tokens "$dir/tokens.yaml" --brokers "$broker" --topic-prefix intake-bench \
  --fingerprint-key "$work/fp.key" 2>"$dir/intake.log" &
intake_pid=$!
intake=""
for _ in $(seq 100); do
  intake=$(sed -n 's|^intake: listening on \(http://[^ ]*\)$|\1|p' "$dir/intake.log")
  [ -n "$intake" ] && break
  sleep 0.1
done
[ -n "$intake" ] || { echo "kafka.sh: the intake did not start: $(cat "$dir/intake.log")" >&2; exit 1; }
SEEDWATCH_BENCH_INTAKE="$intake" SEEDWATCH_BENCH_TOKEN="$token" SEEDWATCH_BENCH_INPUT="$data/events.ndjson" \
  cargo bench --locked --workspace --quiet --bench intake 2>"$dir/intake-bench.err" | tee "$dir/intake.txt" | sed 's/^/   /'
grep -q '^intake/gzip' "$dir/intake.txt" || { echo "kafka.sh: the intake benchmark failed: $(tail -5 "$dir/intake-bench.err")" >&2; exit 1; }
awk -v hz="$(getconf CLK_TCK)" '{ printf "   intake CPU %.1f s over both runs\n", ($14 + $15) / hz }' "/proc/$intake_pid/stat"
