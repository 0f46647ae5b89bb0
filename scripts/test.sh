#!/usr/bin/env bash
# The whole test suite. Installs what the tests need when it is missing:
# tansu (a Kafka-protocol broker, from crates.io), Prism (npm, for the
# OpenAPI contract test), Prometheus and promtool (Debian) and the
# Kubernetes and Compose schema validators (PyPI). Then lints the workspace
# (clippy, every warning an error) and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
# The tests run tansu on SQLite storage (durable across a broker restart, and
# it serves fetches that start inside a record batch) and on memory storage
# where a test needs that engine's mid-batch fetch fault. A tansu built
# without SQLite lacks its metric names: reinstall.
tansu_has_sqlite() {
  local bin
  bin="$(command -v tansu)" && grep -q tansu_sqlite_ "$bin"
}
if ! command -v tansu >/dev/null 2>&1 || ! tansu_has_sqlite; then
  echo "installing tansu with memory and SQLite storage (Kafka-compatible broker; about 13 minutes on 2 cores, once)"
  cargo install tansu --locked --force --features dynostore,libsql
fi
if [ ! -x node_modules/.bin/prism ] && [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
# tests/blackbox/prometheus.rs: Prometheus and promtool (Debian's prometheus package).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus and promtool (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# tests/blackbox/deploy.rs: offline validators that bundle their schemas (PyPI):
# Kubernetes' for deploy/kubernetes/, the Compose Specification's for
# docker-compose.yml.
if ! python3 -c 'import kubernetes_validate, check_jsonschema' >/dev/null 2>&1; then
  echo "installing kubernetes-validate and check-jsonschema (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check \
    kubernetes-validate==1.37.0 check-jsonschema==0.39.0
fi

# Lints first: any warning (dead code included) fails the suite. A
# toolchain installed with rustup's minimal profile lacks clippy.
if ! cargo clippy --version >/dev/null 2>&1; then
  echo "installing clippy (rustup component)"
  rustup component add clippy
fi
cargo clippy --workspace --all-targets --locked -- -D warnings
# Benchmarks print figures (see BENCHMARKS.md) and are not run here; they
# must still build.
cargo check --workspace --benches --locked
cargo test --workspace --locked
