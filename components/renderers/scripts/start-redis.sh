#!/bin/sh
# start-redis.sh: start one Redis data node as master or replica, as Sentinel says.
#
# 1. Ask the Sentinels for the current master (most common answer wins).
# 2. If one names this pod, start as master; if one names another pod, start as its replica.
#    If they name this pod but see it as down or are failing it over (it crashed and came back
#    quickly), wait until the failover ends (at most SENTINEL_FAILOVER_WAIT seconds) and ask again,
#    so the old master does not come back as a second master.
# 3. If no Sentinel answers (first boot, or every Sentinel down), ordinal 0 starts as master and
#    every other ordinal as a replica of ordinal 0. Only ordinal 0 may ever elect itself, so pods
#    starting in parallel cannot form two masters.
# The effective config (template + per-pod lines + credentials) is written to REDIS_RUN_DIR, a
# writable memory-backed volume, readable only by this user; Sentinel's CONFIG REWRITE edits it.
set -eu
. "$(dirname "$0")/common.sh"

: "${POD_NAME:=$(hostname)}"
: "${REDIS_ANNOUNCE_HOST:=$POD_NAME.@@REDIS_HEADLESS_DOMAIN@@}"
: "${REDIS_BIND:=0.0.0.0}"
: "${REDIS_CONFIG_TEMPLATE:=@@REDIS_CONFIG_DIR@@/redis.conf}"
: "${REDIS_RUN_DIR:=@@RUN_DIR@@}"
: "${REDIS_DATA_DIR:=@@DATA_DIR@@}"
# How often to ask the Sentinels before falling back to ordinal 0, and how long between asks.
: "${SENTINEL_QUERY_ATTEMPTS:=3}"
: "${SENTINEL_QUERY_INTERVAL:=2}"
: "${SENTINEL_FAILOVER_WAIT:=@@FAILOVER_WAIT@@}"

load_password
ordinal=${POD_NAME##*-}

master=""
attempt=1
while :; do
    if master=$(ask_sentinels_for_master); then
        break
    fi
    master=""
    [ "$attempt" -ge "$SENTINEL_QUERY_ATTEMPTS" ] && break
    attempt=$((attempt + 1))
    sleep "$SENTINEL_QUERY_INTERVAL"
done

waited=0
while [ -n "$master" ] && [ "${master% *}" = "$REDIS_ANNOUNCE_HOST" ] && [ "$waited" -lt "$SENTINEL_FAILOVER_WAIT" ] &&
    master_in_doubt; do
    [ "$waited" = 0 ] && log "the Sentinels name this pod as master but see it down or failing over; waiting"
    sleep 1
    waited=$((waited + 1))
    master=$(ask_sentinels_for_master) || master=""
done

if [ -n "$master" ]; then
    set -- $master
    master_host=$1
    master_port=$2
    if [ "$master_host" = "$REDIS_ANNOUNCE_HOST" ] && [ "$master_port" = "$REDIS_PORT" ]; then
        role=master
        reason="the Sentinels name this pod as master"
    else
        role=replica
        reason="the Sentinels name $master_host:$master_port as master"
    fi
elif [ "$ordinal" = 0 ]; then
    role=master
    reason="no Sentinel knows a master and this is ordinal 0"
else
    role=replica
    master_host=$REDIS_SEED_HOST
    master_port=$REDIS_PORT
    reason="no Sentinel knows a master; following ordinal 0 ($master_host)"
fi

umask 077
mkdir -p "$REDIS_RUN_DIR"
conf="$REDIS_RUN_DIR/redis.conf"
{
    cat "$REDIS_CONFIG_TEMPLATE"
    printf '\n# Added by start-redis.sh for %s\n' "$POD_NAME"
    printf 'bind %s\nport %s\ndir %s\n' "$REDIS_BIND" "$REDIS_PORT" "$REDIS_DATA_DIR"
    printf 'replica-announce-ip %s\nreplica-announce-port %s\n' "$REDIS_ANNOUNCE_HOST" "$REDIS_PORT"
    printf 'requirepass %s\nmasterauth %s\n' "$REDISCLI_AUTH" "$REDISCLI_AUTH"
    if [ "$role" = replica ]; then
        printf 'replicaof %s %s\n' "$master_host" "$master_port"
    fi
} >"$conf.tmp"
mv "$conf.tmp" "$conf"

log "starting $POD_NAME as $role: $reason"
unset REDISCLI_AUTH
exec redis-server "$conf"
