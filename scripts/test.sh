#!/usr/bin/env bash
# Runs every test Tollgate has, as CI does. Needs PostgreSQL on
# 127.0.0.1:5432 (trust auth, user postgres): the storage tests run on both
# SQLite and Postgres and fail loudly when Postgres is unreachable. Installs
# what the tests need when it is missing: the SDKs (a venv in .venv/ and
# node packages), Debian's chromium and playwright-core for the web pages.
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

# The official client SDKs the integration tests drive (tests/sdk/), and the
# independent implementations the hooks tests check against (standardwebhooks,
# stripe, aiosmtpd): Python's in .venv/, Node's in tests/sdk/node_modules/. Each is (re)installed only
# when missing or when its pinned list changed; a failed install stops here.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing Node.js and npm for the SDK tests"
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
requirements_hash=$(sha256sum tests/sdk/requirements.txt | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$requirements_hash" ]; then
    echo "installing the Python SDKs into .venv/"
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
    echo "$requirements_hash" > .venv/.requirements.sha256
fi
lock_hash=$(sha256sum tests/sdk/package-lock.json | cut -d' ' -f1)
if [ "$(cat tests/sdk/node_modules/.lock.sha256 2>/dev/null)" != "$lock_hash" ]; then
    echo "installing the Node SDKs into tests/sdk/node_modules/"
    (cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" > tests/sdk/node_modules/.lock.sha256
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
