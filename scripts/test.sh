#!/usr/bin/env bash
# Runs every test Tollgate has, as CI does. Needs PostgreSQL on
# 127.0.0.1:5432 (trust auth, user postgres): the storage tests run on both
# SQLite and Postgres and fail loudly when Postgres is unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v pg_dump >/dev/null; then
    echo "installing the PostgreSQL client (pg_dump) for the storage tests"
    apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
