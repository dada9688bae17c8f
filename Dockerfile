# seedwatch: one image for every command (collect, detect, run, query, report, archive ...).
#
# Build:  docker build -t seedwatch:0.1.0 .
# Run:    docker run --rm -v /srv/archive:/archive:ro seedwatch:0.1.0 query --archive /archive "SELECT 1"
#
# The build stage compiles with the locked dependencies; the runtime stage holds the binary,
# the shipped rules, policy and reports, and runs as an unprivileged user with nothing to write
# in the image (the archive, keys and checkpoints are volumes). No container runtime exists on
# the project's build machines: this file is linted with hadolint and its COPY sources are
# checked to exist (tests/deploy.rs); see README "Deployment".

FROM rust:1.95-slim-bookworm AS build
# librdkafka is built from source (its configure script, no cmake) and links the system OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libssl-dev pkg-config python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY schemas schemas
COPY ingest ingest
COPY detect detect
COPY archive archive
COPY kafka kafka
COPY runtime runtime
COPY src src
COPY benches benches
COPY tests tests
COPY rules rules
COPY reports reports
RUN cargo build --release --locked --bin seedwatch \
 && strip target/release/seedwatch

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 seedwatch \
 && useradd --system --uid 10001 --gid seedwatch --no-create-home --shell /usr/sbin/nologin seedwatch
COPY --from=build /src/target/release/seedwatch /usr/local/bin/seedwatch
# The working directory holds the shipped rules/ and reports/, which commands use by default.
WORKDIR /usr/share/seedwatch
COPY rules rules
COPY reports reports
COPY monitoring monitoring
COPY config config
USER 10001:10001
# 8088: the intake (collect http); 9464: /metrics, /healthz, /readyz.
EXPOSE 8088 9464
ENTRYPOINT ["/usr/local/bin/seedwatch"]
CMD ["--help"]
