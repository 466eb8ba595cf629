#!/usr/bin/env bash
# Runs every test Tollgate has, as CI does. Needs PostgreSQL on
# 127.0.0.1:5432 (trust auth, user postgres): the storage tests run on both
# SQLite and Postgres and fail loudly when Postgres is unreachable. The web
# pages are tested in Debian's chromium, driven by playwright-core from npm;
# both are installed here when missing (and skipped quickly when present).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v pg_dump >/dev/null || missing+=(postgresql-client)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} for the tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# playwright-core at the version tests/browser/package.json pins (never a
# browser download: the tests use /usr/bin/chromium).
if ! node -e '
    const want = require("./tests/browser/package.json").dependencies["playwright-core"];
    process.exit(require("./tests/browser/node_modules/playwright-core/package.json").version === want ? 0 : 1);
' 2>/dev/null; then
    echo "installing the browser tests' npm packages"
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
