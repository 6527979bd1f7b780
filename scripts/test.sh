#!/usr/bin/env bash
# Set up, then lint, type-check and run every test against the real engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy"
.venv/bin/mypy src
echo "==> pytest"
# Integration tests must run here: a skipped one fails the run.
export AIFACTORY_REQUIRE_INTEGRATION=1
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
