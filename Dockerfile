# syntax=docker/dockerfile:1
# (BuildKit, the default builder since Docker 23: the RUN heredoc needs it.)
#
# ticketmeter: one Rust binary (librdkafka and OpenSSL linked in) on debian:bookworm-slim.
#
#   docker build -t ticketmeter .
#   docker run --env-file .env ticketmeter              # the collector (`run`)
#   docker run --env-file .env ticketmeter bootstrap    # any other subcommand
#
# The image is built without the `double` cargo feature: the OpenMeter test
# double is not in it, nor the `demo` and `double` subcommands that embed it.
# The `double` target is the same image with them (docker-compose.yml's
# `double` profile runs the double from it):
#
#   docker build --target double -t ticketmeter-double .
#   docker run -p 127.0.0.1:8888:8888 ticketmeter-double double --bind 0.0.0.0
#
# The provisioning API binds 127.0.0.1:${PROVISION_PORT:-8091} inside the
# container (PROVISION_BIND's default). That is enough for the HEALTHCHECK,
# which probes loopback from inside the container. To reach POST /ensure from
# outside the container, set PROVISION_BIND=0.0.0.0 *and* PROVISION_TOKEN
# (ticketmeter refuses to bind off loopback without a token) and publish 8091.
#
# On SIGTERM ticketmeter flushes in-flight batches, commits offsets and exits
# 0 within SHUTDOWN_TIMEOUT (25s): give it a stop timeout above that
# (`docker stop -t 30`, compose `stop_grace_period: 30s`,
# Kubernetes `terminationGracePeriodSeconds: 30`).

############################################################################
# Builder
############################################################################
FROM rust:1.95-bookworm AS builder

# rdkafka builds its bundled librdkafka (configure + make) and a vendored
# OpenSSL (perl + make); rdkafka's default `libz` feature links the system
# zlib (found through pkg-config).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential perl python3 pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# 1. Dependencies only, against stub sources, so this layer is rebuilt only
#    when a manifest or the lock file changes. The workspace is the root
#    package plus crates/openmeter-double (its manifest is needed even though
#    the image does not build it). The dependencies are those of the image
#    (--no-default-features); the `double` target builds the double's own.
COPY Cargo.toml Cargo.lock ./
COPY crates/openmeter-double/Cargo.toml crates/openmeter-double/Cargo.toml
RUN mkdir -p src crates/openmeter-double/src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && : > crates/openmeter-double/src/lib.rs
# Cargo refuses a manifest whose explicitly declared targets ([[bench]] with
# harness = false, [[test]], [[example]], [[bin]]) have no file, even when
# building only --bin ticketmeter: give each missing one a stub. The stubs
# stay for stage 2 (benches/ and tests/ are not part of the image).
RUN python3 - <<'EOF'
import pathlib, tomllib
folders = {"bin": "src/bin", "bench": "benches", "test": "tests", "example": "examples"}
for manifest in [pathlib.Path("Cargo.toml"), *sorted(pathlib.Path("crates").glob("*/Cargo.toml"))]:
    root = manifest.parent
    package = tomllib.loads(manifest.read_text())
    for kind, folder in folders.items():
        for target in package.get(kind, []):
            name = target.get("name", "")
            if "path" in target:
                path = root / target["path"]
            elif kind == "bin" and name == package.get("package", {}).get("name"):
                path = root / "src/main.rs"
            else:
                path = root / folder / f"{name}.rs"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("fn main() {}\n")
                print("stub", path)
EOF
RUN cargo build --release --locked --bin ticketmeter --no-default-features \
 && rm -rf src crates/openmeter-double/src

# 2. The real sources. `examples/` is needed by the `double` target only:
#    its binary include_str!s examples/sample-events.jsonl (`demo`).
COPY src src
COPY crates/openmeter-double/src crates/openmeter-double/src
COPY crates/openmeter-double/openapi crates/openmeter-double/openapi
COPY examples examples
# COPY keeps the files' own mtimes, which can be older than the stub build:
# then cargo would call the stub binary fresh and ship it. Touch the crate
# roots so both local crates are rebuilt, and check that the binary is real
# (the stub prints no version).
RUN touch src/main.rs src/lib.rs crates/openmeter-double/src/lib.rs \
 && cargo build --release --locked --bin ticketmeter --no-default-features \
 && ./target/release/ticketmeter --version | grep -q '^ticketmeter '

# The binary with the `double` feature, for the `double` target only (BuildKit
# skips this stage when building the default image). Its check fails if the
# feature did not take.
FROM builder AS builder-double
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
