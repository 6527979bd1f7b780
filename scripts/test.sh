#!/usr/bin/env bash
# Set up, then lint, type-check and run every test against the real engine,
# a real Slurm cluster, a real PostgreSQL and a real Kubernetes cluster (each
# started here when not already up, and then stopped at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy"
.venv/bin/mypy src
# Stop at the end what this run started (or began to start), even when a later start fails.
started_slurm=0
started_postgres=0
started_k8s=0
stop_services() {
    if [ "$started_k8s" = 1 ]; then bash deploy/k8s-dev-cluster.sh down >/dev/null 2>&1 || true; fi
    if [ "$started_slurm" = 1 ]; then bash deploy/slurm-dev-cluster.sh down >/dev/null 2>&1 || true; fi
    if [ "$started_postgres" = 1 ]; then bash deploy/postgres-dev.sh down >/dev/null 2>&1 || true; fi
}
trap stop_services EXIT
echo "==> Slurm dev cluster"
if ! bash deploy/slurm-dev-cluster.sh status >/dev/null 2>&1; then
    started_slurm=1
    bash deploy/slurm-dev-cluster.sh up
fi
echo "==> PostgreSQL"
if ! bash deploy/postgres-dev.sh status >/dev/null 2>&1; then
    started_postgres=1
    bash deploy/postgres-dev.sh up
fi
echo "==> Kubernetes dev cluster"
# A fresh machine builds Kubernetes from Debian's source first (9-14 min, then cached).
if ! bash deploy/k8s-dev-cluster.sh status >/dev/null 2>&1; then
    started_k8s=1
    bash deploy/k8s-dev-cluster.sh up
fi
echo "==> aifactory's container image"
# Built from deploy/Containerfile and imported into the dev cluster's containerd
# (a few minutes on a fresh machine; later runs find it cached by content).
bash deploy/build-image.sh
echo "==> pytest"
# Integration tests must run here: a skipped one fails the run.
export AIFACTORY_REQUIRE_INTEGRATION=1
.venv/bin/python -m pytest -p no:cacheprovider "$@"
