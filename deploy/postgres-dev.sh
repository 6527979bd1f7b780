#!/usr/bin/env bash
# A real PostgreSQL for developers and CI: Debian's postgresql, its own cluster.
#
#   deploy/postgres-dev.sh up       install if needed, create and start the cluster
#   deploy/postgres-dev.sh status   exit 0 if it accepts connections, 1 if not
#   deploy/postgres-dev.sh url      print the SQLAlchemy URL of the dev database
#   deploy/postgres-dev.sh down [--purge]   stop it (--purge: drop the cluster)
#
# The cluster is Debian's `pg_createcluster <ver> aifactory` on 127.0.0.1:55432,
# so it never touches the machine's `main` cluster. Role and database are both
# `aifactory` (password `aifactory`, loopback only): it is a development
# database. Needs root (pg_createcluster, pg_ctlcluster, apt-get).
set -euo pipefail

NAME=aifactory
PORT=${AIF_PG_DEV_PORT:-55432}
URL="postgresql+psycopg://aifactory:aifactory@127.0.0.1:${PORT}/aifactory"

log() { echo "==> $*"; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

version() {
    ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1
}

install() {
    if [ -z "$(version)" ] || ! command -v pg_createcluster >/dev/null; then
        log "installing postgresql (apt)"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
    fi
}

ready() {
    local ver
    ver=$(version)
    [ -n "$ver" ] && "/usr/lib/postgresql/$ver/bin/pg_isready" -q -h 127.0.0.1 -p "$PORT"
}

up() {
    install
    local ver
    ver=$(version)
    if ! pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$ver/$NAME"; then
        log "creating PostgreSQL $ver cluster '$NAME' on port $PORT"
        as_root pg_createcluster "$ver" "$NAME" -p "$PORT" -- --auth-local=peer --auth-host=scram-sha-256 >/dev/null
        as_root sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" \
            "/etc/postgresql/$ver/$NAME/postgresql.conf"
    fi
    if ! ready; then
        log "starting PostgreSQL $ver cluster '$NAME'"
        as_root pg_ctlcluster "$ver" "$NAME" start
        for _ in $(seq 1 50); do ready && break; sleep 0.2; done
    fi
    ready || { echo "error: PostgreSQL did not start; see /var/log/postgresql/" >&2; exit 1; }
    as_root runuser -u postgres -- psql -q -p "$PORT" -v ON_ERROR_STOP=1 <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'aifactory') THEN
        CREATE ROLE aifactory LOGIN PASSWORD 'aifactory' CREATEDB;
    END IF;
END $$;
SELECT 'CREATE DATABASE aifactory OWNER aifactory'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'aifactory')\gexec
SQL
    log "PostgreSQL ready: $URL"
}

down() {
    local ver
    ver=$(version)
    [ -n "$ver" ] || return 0
    if pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$ver/$NAME"; then
        as_root pg_ctlcluster "$ver" "$NAME" stop 2>/dev/null || true
        if [ "${1:-}" = "--purge" ]; then
            as_root pg_dropcluster "$ver" "$NAME"
            log "dropped cluster '$NAME'"
        else
            log "stopped cluster '$NAME'"
        fi
    fi
}

case "${1:-}" in
    up) up ;;
    down) shift; down "${1:-}" ;;
    status) ready && echo "up: $URL" || { echo "down"; exit 1; } ;;
    url) echo "$URL" ;;
    *) echo "usage: $0 up|status|url|down [--purge]" >&2; exit 2 ;;
esac
