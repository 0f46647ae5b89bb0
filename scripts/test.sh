#!/usr/bin/env bash
# The whole test suite. Installs what the tests need when it is missing:
# tansu (a Kafka-protocol broker, from crates.io) and Prism (npm, for the
# OpenAPI contract test). Then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
# The tests run tansu on SQLite storage (durable across a broker restart, and
# it serves fetches that start inside a record batch) and once on memory
# storage. A tansu built without SQLite lacks its metric names: reinstall.
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

# Benchmarks print figures (see BENCHMARKS.md) and are not run here; they
# must still build.
cargo check --workspace --benches --locked
cargo test --workspace --locked
