#!/bin/sh
# start-exporter.sh redis|sentinel [redis_exporter flags...]
#
# The exporter sidecar's entrypoint. redis_exporter takes its password verbatim from REDIS_PASSWORD
# (or argv, or a JSON map file), but our Secret files may list two passwords, one per line, during
# a rotation (components/acl.py): the exporter must get the first line only. This script reads it
# with a shell builtin and hands it to the exporter in the exporter's own environment, never on a
# command line. It then watches the file and restarts the exporter when the first line changes, so
# a rotation needs no pod restart (the exporter opens a new connection per scrape, so it only ever
# needs the password that is current).
#
#   redis:    as ACL user REDIS_USER (the exporter reads that variable too) with REDIS_PASSWORD_FILE;
#   sentinel: the Sentinels' password (SENTINEL_PASSWORD_FILE), no user name.
# EXPORTER_BIN is the exporter binary (the container sets it from monitoring.exporterBinary).
set -u
mode=${1:-}
[ $# -gt 0 ] && shift
if [ "$mode" = redis ]; then
    # Before common.sh: its password file default follows REDIS_USER.
    : "${REDIS_USER:=@@EXPORTER_USER@@}"
fi
. "$(dirname "$0")/common.sh"

: "${EXPORTER_BIN:?EXPORTER_BIN must name the redis_exporter binary}"
# Seconds between two looks at the password file (the kubelet refreshes it within about a minute).
: "${EXPORTER_RELOAD_SECONDS:=10}"

case "$mode" in
    redis)
        password_file=$REDIS_PASSWORD_FILE
        export REDIS_USER
        ;;
    sentinel)
        password_file=$SENTINEL_PASSWORD_FILE
        unset REDIS_USER
        ;;
    *)
        log "usage: start-exporter.sh redis|sentinel [exporter flags]; got '$mode'"
        exit 2
        ;;
esac
# redis_exporter reads REDIS_PASSWORD_FILE itself, as a JSON map of URI to password: it must never
# see our plain password file under that name.
unset REDIS_PASSWORD_FILE SENTINEL_PASSWORD_FILE REDIS_PASSWORD

child=""
sleeper=""
stop() {
    [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null
        wait "$child"
    fi
    exit 0
}
trap stop TERM INT

while :; do
    password=$(first_password "$password_file") || exit 1
    # The assignment prefix puts the password in the exporter's environment only; `password`
    # itself stays an unexported shell variable.
    REDIS_PASSWORD=$password "$EXPORTER_BIN" "$@" &
    child=$!
    log "exporter started (pid $child) with the first password of $password_file"
    while :; do
        sleep "$EXPORTER_RELOAD_SECONDS" &
        sleeper=$!
        wait "$sleeper"
        sleeper=""
        if ! kill -0 "$child" 2>/dev/null; then
            wait "$child"
            status=$?
            log "exporter exited with status $status"
            exit "$status"
        fi
        # A missing or empty file (mid-update) keeps the running exporter.
        current=$(first_password "$password_file" 2>/dev/null) || continue
        [ "$current" = "$password" ] && continue
        log "the first password in $password_file changed: restarting the exporter"
        kill -TERM "$child" 2>/dev/null
        wait "$child"
        child=""
        break
    done
done
