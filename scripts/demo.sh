#!/usr/bin/env bash
# Set up, start aifactory on 127.0.0.1:8000, deploy chat + embeddings, use them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/aifactory demo --examples examples
