#!/usr/bin/env bash
# Set up, then lint, type-check and run every test against the real engine,
# a real Slurm cluster and a real Kubernetes cluster (each started here when
# not already up, and then stopped at the end).
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
stop_slurm() { if [ "$started_slurm" = 1 ]; then bash deploy/slurm-dev-cluster.sh down >/dev/null 2>&1 || true; fi; }
trap stop_slurm EXIT
echo "==> Kubernetes dev cluster"
# A fresh machine builds Kubernetes from Debian's source first (~10 min, then cached).
started_k8s=0
if ! bash deploy/k8s-dev-cluster.sh status >/dev/null 2>&1; then
    bash deploy/k8s-dev-cluster.sh up
    started_k8s=1
fi
stop_k8s() { if [ "$started_k8s" = 1 ]; then bash deploy/k8s-dev-cluster.sh down >/dev/null 2>&1 || true; fi; }
trap 'stop_k8s; stop_slurm' EXIT
echo "==> pytest"
# Integration tests must run here: a skipped one fails the run.
export AIFACTORY_REQUIRE_INTEGRATION=1
.venv/bin/python -m pytest -p no:cacheprovider "$@"
