# ticketmeter: one Rust binary (librdkafka and OpenSSL linked in) on debian:bookworm-slim.
#
#   docker build -t ticketmeter .
#   docker run --env-file .env ticketmeter              # the collector (`run`)
#   docker run --env-file .env ticketmeter bootstrap    # any other subcommand
#
# Plain Dockerfile syntax only: it builds with Docker's classic builder,
# BuildKit, buildah and podman alike. scripts/image.sh builds both targets on
# a machine without a container engine (buildah) and smoke-tests the image.
#
# The image is built without the `double` cargo feature: the OpenMeter test
# double is not in it, nor the `demo` and `double` subcommands that embed it.
# The `double` target is the same image with them (docker-compose.yml's
# `double` profile runs the double from it):
#
#   docker build --target double -t ticketmeter-double .
#   docker run -p 127.0.0.1:8888:8888 ticketmeter-double double --bind 0.0.0.0
#
# BuildKit and buildah build only the stages a target needs; Docker's classic
# builder builds every stage before it, so there the default image also
# builds (and caches) the `double` binary.
#
# The provisioning API binds 127.0.0.1:${PROVISION_PORT:-8091} inside the
# container (PROVISION_BIND's default). That is enough for the HEALTHCHECK,
# which probes loopback from inside the container. To reach POST /ensure,
# /ready or /metrics from outside the container, set PROVISION_BIND=0.0.0.0
# *and* PROVISION_TOKEN (ticketmeter refuses to bind off loopback without a
# token) and publish 8091.
#
# On SIGTERM ticketmeter flushes in-flight batches, commits offsets and exits
# 0 within SHUTDOWN_TIMEOUT (25s): give it a stop timeout above that
# (`docker stop -t 30`, compose `stop_grace_period: 30s`,
# Kubernetes `terminationGracePeriodSeconds: 30`).

############################################################################
# Toolchain: Rust, the C toolchain (librdkafka, OpenSSL, jemalloc), cargo-chef
############################################################################
FROM rust:1.95-bookworm AS chef

# rdkafka builds its bundled librdkafka (configure + make) and a vendored
# OpenSSL (perl + make); rdkafka's default `libz` feature links the system
# zlib (found through pkg-config); tikv-jemallocator builds jemalloc
# (configure + make).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential perl python3 pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

# cargo-chef turns the workspace into a "recipe" (manifests and lock file
# only) and builds the dependencies from it, so the dependency layer is
# rebuilt only when a manifest or Cargo.lock changes. It also stubs every
# declared target ([[bench]] with harness = false and the like) that cargo
# would otherwise refuse to find.
RUN cargo install cargo-chef --locked --version 0.1.78 \
 && rm -rf "$CARGO_HOME/registry"

# The release profile keeps line tables (debug = 1, for profiling); the
# image does without them, which makes its binary a fraction of the size
# and its layers faster. Symbols stay, so backtraces still name functions.
ENV CARGO_PROFILE_RELEASE_DEBUG=0

WORKDIR /build

############################################################################
# The recipe: rebuilt on any change, but its output (recipe.json) changes
# only with the manifests and the lock file.
############################################################################
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

############################################################################
# The production binary (--no-default-features: no test double)
############################################################################
FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json \
      --bin ticketmeter --no-default-features
# The real sources over cook's skeleton. The declared benches keep their
# stubs from the skeleton: benches/ is needed only by the planner (cargo
# metadata), so a bench edit does not rebuild the binary. `examples/` is
# needed by the `double` binary only (it include_str!s
# examples/sample-events.jsonl for `demo`).
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY crates crates
COPY examples examples
# cargo-chef removed its stub builds of our own crates, so this compiles the
# real sources; the check fails if a stub binary ever slipped through (the
# stub prints no version).
RUN cargo build --release --locked --bin ticketmeter --no-default-features \
 && ./target/release/ticketmeter --version | grep -q '^ticketmeter '

############################################################################
# The binary with the `double` feature, for the `double` target only. Its
# dependencies are cooked apart from the production build's (the feature
# changes what they are built with), so each target keeps its own cache.
############################################################################
FROM chef AS builder-double
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin ticketmeter
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY crates crates
COPY examples examples
RUN cargo build --release --locked --bin ticketmeter \
 && ./target/release/ticketmeter double --help > /dev/null

############################################################################
# Runtime
############################################################################
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to Kafka (librdkafka's OpenSSL) and the price oracle /
# OpenMeter (rustls also carries its own roots). zlib1g: librdkafka's zlib.
# The binary otherwise needs only libc, libm and libgcc_s (all in the base).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 ticketmeter \
 && useradd --uid 10001 --gid 10001 --no-log-init \
      --home-dir /var/lib/ticketmeter --create-home \
      --shell /usr/sbin/nologin ticketmeter

# Working directory for file output (`replay`'s DLQ_FILE, ticketmeter-dlq.jsonl).
# ticketmeter also reads ./.env from here if one is mounted; the real
# environment wins over it.
WORKDIR /var/lib/ticketmeter
USER 10001:10001

# The provisioning API (POST /ensure, GET /health, /ready, /metrics).
EXPOSE 8091

# Probes http://127.0.0.1:$PROVISION_PORT/health from inside the container.
# Only `run` and `serve` serve it: override or disable the check when running
# another subcommand as a long-lived container (e.g. `double`).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["ticketmeter", "healthcheck"]

ENTRYPOINT ["ticketmeter"]
CMD ["run"]

############################################################################
# `--target double`: the runtime with the test double (`double`, `demo`).
# Not for production: docker-compose.yml's `double` profile only.
############################################################################
FROM runtime AS double
COPY --from=builder-double /build/target/release/ticketmeter /usr/local/bin/ticketmeter

############################################################################
# The default target (last stage): the production image, without the double.
############################################################################
FROM runtime
COPY --from=builder /build/target/release/ticketmeter /usr/local/bin/ticketmeter
