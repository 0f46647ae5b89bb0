#!/usr/bin/env bash
# The whole test suite. Installs what the tests need when it is missing:
# tansu (a Kafka-protocol broker, from crates.io) and Prism (npm, for the
# OpenAPI contract test). Then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null 2>&1; then
  echo "installing tansu (Kafka-compatible broker; about 9 minutes on 2 cores, once)"
  cargo install tansu --locked --features dynostore
fi
if [ ! -x node_modules/.bin/prism ] && [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# Benchmarks print figures (see BENCHMARKS.md) and are not run here; they
# must still build.
cargo check --workspace --benches --locked
cargo test --workspace --locked
