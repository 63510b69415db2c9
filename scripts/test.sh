#!/usr/bin/env bash
# Install everything the project needs and run every test: cargo tests, pytest (incl. the CLI end to end
# and the notebooks). Cargo's build cache lives outside the clone, and tests run in the release profile
# that the Python extension is built with, so nothing is compiled twice for debug.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/xsmom-target}"
python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet ".[dev,research,dask,postgres]"
# A real PostgreSQL server for the shared-study test (tests/pg_server.py starts it on 127.0.0.1).
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
            || echo "warning: could not install PostgreSQL; the shared-study test will be skipped" >&2
    fi
fi
cargo test --release --all-targets
python3 -m pytest -q tests
