#!/bin/sh
# start-sentinel.sh: start one Sentinel with a writable config and a stable identity.
#
# Sentinel rewrites its config file and refuses to start on a read-only one, so it runs from a
# copy in SENTINEL_DATA_DIR. A copy left by an earlier run of this pod (a container restart) is
# kept: it holds what the Sentinel learned (current master, epoch, replicas, peers); only the
# credentials are refreshed. A new copy monitors, for each data tier (SENTINEL_MONITORS), the
# master a majority of the peer Sentinels follow; failing that, a pod of that tier reporting ROLE
# master; failing that, the tier's ordinal 0.
# `sentinel myid` is derived from the pod name: a restarted Sentinel keeps its identity, so its
# peers never count a stale twin towards the majority.
set -eu
. "$(dirname "$0")/common.sh"

: "${POD_NAME:=$(hostname)}"
: "${SENTINEL_ANNOUNCE_HOST:=$POD_NAME.@@SENTINEL_HEADLESS_DOMAIN@@}"
: "${SENTINEL_BIND:=0.0.0.0}"
: "${SENTINEL_CONFIG_TEMPLATE:=@@SENTINEL_CONFIG_DIR@@/sentinel.conf}"
: "${SENTINEL_DATA_DIR:=@@DATA_DIR@@}"
# Seconds to wait, in all over every tier, for the masters to answer before starting anyway
# (Sentinel exits if it cannot resolve a master's name, so on a first boot it waits for that
# pod's DNS record).
: "${SENTINEL_MASTER_WAIT:=60}"
# The ACL user the Sentinel monitors and reconfigures the data nodes as.
: "${SENTINEL_ACL_USER:=@@SENTINEL_ACL_USER@@}"

load_password
umask 077
mkdir -p "$SENTINEL_DATA_DIR"
conf="$SENTINEL_DATA_DIR/sentinel.conf"

# The Sentinel's own password (clients and peer Sentinels), and its ACL user on every tier's
# data nodes.
credentials() {
    _monitor_auth=$(first_password "$AUTH_DIR/$SENTINEL_ACL_USER-password") || exit 1
    printf 'requirepass %s\n' "$SENTINEL_AUTH"
    printf 'sentinel sentinel-pass %s\n' "$SENTINEL_AUTH"
    for _monitor in $SENTINEL_MONITORS; do
        printf 'sentinel auth-user %s %s\n' "${_monitor%%=*}" "$SENTINEL_ACL_USER"
        printf 'sentinel auth-pass %s %s\n' "${_monitor%%=*}" "$_monitor_auth"
    done
}

# Succeeds when the config file $1 monitors every tier of SENTINEL_MONITORS.
monitors_every_tier() {
    for _monitor in $SENTINEL_MONITORS; do
        grep -q "^sentinel monitor ${_monitor%%=*} " "$1" || return 1
    done
}

# TLS only, also towards the data nodes and the peer Sentinels (tls-replication).
tls_lines() {
    if [ "$REDIS_TLS" = yes ]; then
        printf 'port 0\ntls-port %s\ntls-replication yes\ntls-auth-clients no\n' "$SENTINEL_PORT"
        printf 'tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n' "$TLS_CERT_FILE" "$TLS_KEY_FILE" "$TLS_CA_FILE"
    else
        printf 'port %s\n' "$SENTINEL_PORT"
    fi
}

# A copy that lacks a tier (written before that tier existed) starts over from the peers.
if [ -s "$conf" ] && monitors_every_tier "$conf"; then
    {
        grep -v -e '^requirepass ' -e '^sentinel sentinel-pass ' -e '^sentinel auth-pass ' -e '^sentinel auth-user ' "$conf"
        credentials
    } >"$conf.tmp"
    mv "$conf.tmp" "$conf"
    log "starting $POD_NAME from its earlier config (credentials refreshed)"
    unset REDIS_AUTH SENTINEL_AUTH
    exec "$SENTINEL_BIN" "$conf"
fi

# For each tier: the master to monitor, as sed expressions filling in the template. The wait for
# a master to answer is one budget for all tiers (SENTINEL_MASTER_WAIT), so the startup probe,
# sized for one wait, also covers a first boot where no tier's master answers yet.
fill=""
started=""
waited=0
for monitor in $SENTINEL_MONITORS; do
    select_monitor "$monitor"
    if master=$(ask_sentinels_for_master "$SENTINEL_ANNOUNCE_HOST:$SENTINEL_PORT"); then
        reason="a majority of the peer Sentinels follow it"
    elif master=$(find_master_among_pods); then
        reason="no peer majority; it reports ROLE master"
    else
        master="$REDIS_SEED_HOST $REDIS_PORT"
        reason="no peer majority and no pod reports ROLE master; starting from ordinal 0"
    fi
    set -- $master
    master_host=$1
    master_port=$2

    until redis_cli -h "$master_host" -p "$master_port" PING >/dev/null 2>&1; do
        if [ "$waited" -ge "$SENTINEL_MASTER_WAIT" ]; then
            log "master $master_host:$master_port of $MASTER_NAME did not answer within the ${SENTINEL_MASTER_WAIT}s wait; starting anyway"
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    fill="$fill -e s/@MASTER_HOST:$MASTER_NAME@/$master_host/ -e s/@MASTER_PORT:$MASTER_NAME@/$master_port/"
    started="$started; $MASTER_NAME at $master_host:$master_port: $reason"
done

myid=$(printf '%s' "$POD_NAME" | sha1sum | cut -c1-40)
{
    # shellcheck disable=SC2086 # one word per sed expression
    sed $fill "$SENTINEL_CONFIG_TEMPLATE"
    printf '\n# Added by start-sentinel.sh for %s\n' "$POD_NAME"
    printf 'bind %s\ndir %s\n' "$SENTINEL_BIND" "$SENTINEL_DATA_DIR"
    tls_lines
    printf 'sentinel announce-ip %s\nsentinel announce-port %s\n' "$SENTINEL_ANNOUNCE_HOST" "$SENTINEL_PORT"
    printf 'sentinel myid %s\n' "$myid"
    credentials
} >"$conf.tmp"
mv "$conf.tmp" "$conf"

log "starting $POD_NAME monitoring ${started#; }"
unset REDIS_AUTH SENTINEL_AUTH
exec "$SENTINEL_BIN" "$conf"
