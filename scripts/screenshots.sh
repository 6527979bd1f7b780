#!/usr/bin/env bash
# Retake the dashboard screenshots in docs/screenshots by running the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
AIFACTORY_SCREENSHOTS_DIR="$PWD/docs/screenshots" .venv/bin/python -m pytest -p no:cacheprovider -q tests/e2e "$@"
