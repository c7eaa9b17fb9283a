#!/bin/sh
# probe-sentinel.sh startup|liveness|readiness [timeout-seconds]
#
# startup, liveness: the Sentinel answers PING with PONG.
# readiness: it also names a master for every tier it monitors (SENTINEL_MONITORS), so clients
# sent to it can discover each one.
set -u
. "$(dirname "$0")/common.sh"

: "${SENTINEL_HOST:=127.0.0.1}"
mode=${1:-}
CLI_TIMEOUT=${2:-$CLI_TIMEOUT}
addr="$SENTINEL_HOST:$SENTINEL_PORT"

load_password

reply=$(sentinel_at "$addr" PING 2>&1) || true
if [ "$reply" != PONG ]; then
    log "$mode: PING answered '$reply'"
    exit 1
fi

case "$mode" in
    startup | liveness) exit 0 ;;
    readiness)
        for monitor in $SENTINEL_MONITORS; do
            name=${monitor%%=*}
            master=$(sentinel_at "$addr" SENTINEL get-master-addr-by-name "$name" 2>&1 | sed -n 2p)
            case "$master" in
                '' | *[!0-9]*)
                    log "readiness: no master known for $name"
                    exit 1
                    ;;
            esac
        done
        exit 0
        ;;
    *)
        log "usage: probe-sentinel.sh startup|liveness|readiness [timeout-seconds]"
        exit 2
        ;;
esac
