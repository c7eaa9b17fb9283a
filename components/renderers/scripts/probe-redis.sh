#!/bin/sh
# probe-redis.sh startup|liveness|readiness [timeout-seconds]
#
# startup, liveness: the server answers PING with PONG, or with LOADING (a large AOF is being
#   read) or MASTERDOWN (a replica whose master is gone); restarting it would not help either.
# readiness: PONG, and a replica must have its link to the master up and no sync in progress, so
#   that no client reads from a replica that is empty or still loading.
set -u
. "$(dirname "$0")/common.sh"

: "${REDIS_HOST:=127.0.0.1}"
mode=${1:-}
CLI_TIMEOUT=${2:-$CLI_TIMEOUT}

load_password
reply=$(redis_cli -h "$REDIS_HOST" -p "$REDIS_PORT" PING 2>&1) || true

case "$mode" in
    startup | liveness)
        case "$reply" in
            PONG | LOADING* | MASTERDOWN*) exit 0 ;;
        esac
        log "$mode: PING answered '$reply'"
        exit 1
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
        fi
        exit 0
        ;;
    *)
        log "usage: probe-redis.sh startup|liveness|readiness [timeout-seconds]"
        exit 2
        ;;
esac
