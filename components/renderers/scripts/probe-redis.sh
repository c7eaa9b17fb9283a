#!/bin/sh
# probe-redis.sh startup|liveness|readiness [timeout-seconds]
#
# startup, liveness: the server answers PING with PONG, or with LOADING (a large AOF is being
#   read) or MASTERDOWN (a replica whose master is gone); restarting it would not help either.
#   Liveness also fails on a replication loop (this replica's master is a replica of this pod):
#   nothing ends one by itself (the Sentinels find no good replica to promote), and a restart
#   runs start-redis.sh, which resumes as master when the pods still follow this one.
# readiness: PONG, and a replica must have its link to the master up and no sync in progress, so
#   that no client reads from a replica that is empty or still loading, and must be promotable
#   again (start-redis.sh restores its replica-priority once it has synced), so that a rolling
#   update moves on only when the Sentinels may fail over to it.
set -u
. "$(dirname "$0")/common.sh"

: "${REDIS_HOST:=127.0.0.1}"
: "${REDIS_CONFIG_TEMPLATE:=@@REDIS_CONFIG_DIR@@/redis.conf}"
# The name this pod announces (what its replicas, and a looping master, record as master_host).
: "${REDIS_ANNOUNCE_HOST:=${POD_NAME:-$(hostname)}.@@REDIS_HEADLESS_DOMAIN@@}"
mode=${1:-}
CLI_TIMEOUT=${2:-$CLI_TIMEOUT}

load_password
reply=$(redis_cli -h "$REDIS_HOST" -p "$REDIS_PORT" PING 2>&1) || true

case "$mode" in
    startup)
        case "$reply" in
            PONG | LOADING* | MASTERDOWN*) exit 0 ;;
        esac
        log "$mode: PING answered '$reply'"
        exit 1
        ;;
    liveness)
        case "$reply" in
            PONG | MASTERDOWN*) ;;
            LOADING*) exit 0 ;;
            *)
                log "liveness: PING answered '$reply'"
                exit 1
                ;;
        esac
        info=$(redis_cli -h "$REDIS_HOST" -p "$REDIS_PORT" INFO replication 2>/dev/null) || exit 0
        [ "$(printf '%s\n' "$info" | info_field role)" = slave ] || exit 0
        master="$(printf '%s\n' "$info" | info_field master_host):$(printf '%s\n' "$info" | info_field master_port)"
        # The master's own view, within 1 s: a master that is slow or gone is no loop (and must not
        # get this replica restarted); MASTERDOWN is fine above.
        upstream=$(CLI_TIMEOUT=1 cli_at "$master" INFO replication 2>/dev/null) || exit 0
        if [ "$(printf '%s\n' "$upstream" | info_field role)" = slave ] &&
            [ "$(printf '%s\n' "$upstream" | info_field master_host)" = "$REDIS_ANNOUNCE_HOST" ]; then
            log "liveness: replication loop: this pod follows $master, which follows this pod"
            exit 1
        fi
        exit 0
        ;;
    readiness)
        if [ "$reply" != PONG ]; then
            log "readiness: PING answered '$reply'"
            exit 1
        fi
        info=$(redis_cli -h "$REDIS_HOST" -p "$REDIS_PORT" INFO replication) || exit 1
        role=$(printf '%s\n' "$info" | info_field role)
        if [ "$role" = slave ]; then
            link=$(printf '%s\n' "$info" | info_field master_link_status)
            syncing=$(printf '%s\n' "$info" | info_field master_sync_in_progress)
            if [ "$link" != up ] || [ "$syncing" != 0 ]; then
                log "readiness: replica link '$link', sync in progress '$syncing'"
                exit 1
            fi
            priority=$(printf '%s\n' "$info" | info_field slave_priority)
            if [ "$priority" = 0 ] && [ "$(configured_priority "$REDIS_CONFIG_TEMPLATE")" != 0 ]; then
                log "readiness: synced, not yet promotable (replica-priority 0)"
                exit 1
            fi
        fi
        exit 0
        ;;
    *)
        log "usage: probe-redis.sh startup|liveness|readiness [timeout-seconds]"
        exit 2
        ;;
esac
