#!/usr/bin/env bash
# Set up, then lint, type-check and run every test against the real engine,
# a real Slurm cluster and a real PostgreSQL (started here, stopped at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy"
.venv/bin/mypy src
echo "==> Slurm dev cluster"
started_slurm=0
if ! bash deploy/slurm-dev-cluster.sh status >/dev/null 2>&1; then
    bash deploy/slurm-dev-cluster.sh up
    started_slurm=1
fi
echo "==> PostgreSQL"
started_postgres=0
if ! bash deploy/postgres-dev.sh status >/dev/null 2>&1; then
    bash deploy/postgres-dev.sh up
    started_postgres=1
fi
stop_services() {
    if [ "$started_slurm" = 1 ]; then bash deploy/slurm-dev-cluster.sh down >/dev/null 2>&1 || true; fi
    if [ "$started_postgres" = 1 ]; then bash deploy/postgres-dev.sh down >/dev/null 2>&1 || true; fi
}
trap stop_services EXIT
echo "==> pytest"
# Integration tests must run here: a skipped one fails the run.
export AIFACTORY_REQUIRE_INTEGRATION=1
.venv/bin/python -m pytest -p no:cacheprovider "$@"
