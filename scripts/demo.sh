#!/usr/bin/env bash
# Set up, start aifactory on 127.0.0.1:8000, deploy chat + embeddings, use them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Models run as an unprivileged Unix user, never as the control plane's.
if [ "$(id -u)" -eq 0 ]; then
    if ! id aif-workload >/dev/null 2>&1; then
        echo "==> creating the unprivileged Unix user aif-workload: the demo's models run as it, never as root (AIFACTORY_WORKLOAD_USER)"
        useradd --system --user-group --no-create-home --shell /usr/sbin/nologin aif-workload
    fi
elif [ -z "${AIFACTORY_LAUNCH_PREFIX:-}" ]; then
    echo "==> not root and no AIFACTORY_LAUNCH_PREFIX: the demo runs in the INSECURE single-user mode (every workload as you), fit for a personal machine only"
    export AIFACTORY_INSECURE_SINGLE_USER=1
fi
exec .venv/bin/aifactory demo --examples examples
