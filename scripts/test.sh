#!/usr/bin/env bash
# Install everything the project needs and run every test: cargo tests, pytest (API, CLI end to end,
# report in headless Chromium, deploy layout, notebooks).
#
# One cargo target folder for everything: the wheel built below (maturin honours CARGO_TARGET_DIR) and
# `cargo test --release` (the profile the extension is built with) both use it, so the dependencies
# are compiled once and an unchanged crate is not rebuilt. It is ./target when README's first command
# (`pip install .`, which builds there) has run in this clone, else ~/.cache/xsmom-target, outside the
# clone, so that a fresh clone (CI) reuses the last run's build. CARGO_TARGET_DIR overrides both.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
    if [[ -d target/release ]]; then
        export CARGO_TARGET_DIR="$PWD/target"
    else
        export CARGO_TARGET_DIR="$HOME/.cache/xsmom-target"
    fi
fi
echo "scripts/test.sh: cargo target folder $CARGO_TARGET_DIR" >&2

# System packages: PostgreSQL for the shared-study test (tests/pg_server.py starts it on 127.0.0.1),
# Chromium for rendering report.html headless. Without apt-get (or root) those tests skip with a reason.
missing=()
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    missing+=(chromium)
fi
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo="sudo -n"
    if command -v apt-get >/dev/null; then
        ($sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null) \
            || echo "warning: could not install ${missing[*]}; the tests that need them will be skipped" >&2
    else
        echo "warning: no apt-get: install ${missing[*]} by hand, or the tests that need them are skipped" >&2
    fi
fi

python3 -m pip install --quiet --upgrade pip
# One wheel, built once: installed here with the extras, and into a fresh venv by
# tests/test_fresh_install.py (what a user gets from `pip install .`).
wheels="$CARGO_TARGET_DIR/wheels"
rm -rf "$wheels"
python3 -m pip wheel --quiet --no-deps . -w "$wheels"
wheel=$(ls "$wheels"/xsmom-*.whl)
python3 -m pip install --quiet --force-reinstall --no-deps "$wheel"
python3 -m pip install --quiet "$wheel[dev,research,dask,postgres]"
export XSMOM_WHEEL="$wheel"
# Style first (cheap, and a failing check should not wait for the tests): rustfmt, clippy on every
# target and feature (the pyo3 layer included), ruff lint and format.
cargo fmt --all -- --check
cargo clippy --release --all-targets --all-features -- -D warnings
python3 -m ruff check python tests
python3 -m ruff format --check python tests
cargo test --release --all-targets
# The operations test runs the xsmom-live binary that `cargo test --release` just built here.
export XSMOM_LIVE="${XSMOM_LIVE:-$CARGO_TARGET_DIR/release/xsmom-live}"
python3 -m pytest -q tests
