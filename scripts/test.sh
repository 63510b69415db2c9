#!/usr/bin/env bash
# Install everything the project needs and run every test: cargo tests, pytest (incl. the CLI end to end
# and the notebooks). Cargo's build cache lives outside the clone, and tests run in the release profile
# that the Python extension is built with, so nothing is compiled twice for debug.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/xsmom-target}"
python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet ".[dev,research]"
cargo test --release --all-targets
python3 -m pytest -q tests
