#!/bin/sh
# start-redis.sh: start one Redis data node as master or replica, as the cluster says.
#
# 1. Ask the Sentinels for the current master; a majority of them must agree.
# 2. They name another pod: start as its replica.
#    They name this pod: start as master, except
#    - while they see it down or are failing it over (it crashed and came back fast): wait for the
#      failover to end and ask again, so an old master does not return as a second master;
#    - when this pod has no data (new volume, persistence off) but other pods do: an empty master
#      would make its replicas resync to nothing. Wait for the Sentinels to promote a replica
#      (this pod is not answering, so they will); if they still name it, exit and let the kubelet
#      restart it.
# 3. No majority answer (first boot, Sentinels down): follow a pod that reports ROLE master. When
#    none does, a pod that the other pods still follow as their master (it restarted while the
#    Sentinels could not fail it over) starts as master again; following anyone would close a
#    replication loop. Otherwise only ordinal 0 may start as master and every other ordinal
#    follows ordinal 0, so pods starting in parallel (none following anyone) cannot form two masters.
# 4. A replica starts unpromotable (replica-priority 0) and becomes promotable (the template's
#    priority) once it has synced with a master. Until then its data is whatever its files held
#    when it stopped and its offset says nothing (it has not synced): were the Sentinels to
#    promote it while the replica in sync is down in their eyes, the others would resync from
#    it and lose every write confirmed since it stopped. A background watcher polls INFO and
#    sends CONFIG SET as the admin user (this pod holds every password already: it writes the
#    ACL file) to this node only.
# The effective config (template + per-pod lines + masterauth) and the ACL file (every user with
# the hashes of its passwords) are written to REDIS_RUN_DIR, a writable memory-backed volume,
# readable only by this user; Sentinel's CONFIG REWRITE edits the config there. With REDIS_TLS=yes
# the node serves TLS only, replicates over TLS, and verifies peers against TLS_CA_FILE.
set -eu
. "$(dirname "$0")/common.sh"

: "${POD_NAME:=$(hostname)}"
: "${REDIS_ANNOUNCE_HOST:=$POD_NAME.@@REDIS_HEADLESS_DOMAIN@@}"
: "${REDIS_BIND:=0.0.0.0}"
: "${REDIS_CONFIG_TEMPLATE:=@@REDIS_CONFIG_DIR@@/redis.conf}"
: "${REDIS_RUN_DIR:=@@RUN_DIR@@}"
: "${REDIS_DATA_DIR:=@@DATA_DIR@@}"
# How often to ask the Sentinels before falling back, and how long between asks.
: "${SENTINEL_QUERY_ATTEMPTS:=3}"
: "${SENTINEL_QUERY_INTERVAL:=2}"
: "${SENTINEL_FAILOVER_WAIT:=@@FAILOVER_WAIT@@}"
# The ACL users template (users and rules, no secret) and the user replicas authenticate as.
: "${REDIS_ACL_TEMPLATE:=@@REDIS_CONFIG_DIR@@/users.acl}"
: "${REPLICATION_USER:=@@REPLICATION_USER@@}"
# Where this node answers its own scripts, the user allowed CONFIG SET, how often a replica's
# watcher looks for its first sync (seconds), and after how many looks it says it is still waiting.
: "${REDIS_HOST:=127.0.0.1}"
: "${ADMIN_USER:=@@ADMIN_USER@@}"
: "${SYNC_WATCH_INTERVAL:=0.5}"
: "${SYNC_WATCH_REPORT_LOOKS:=7200}"

load_password
ordinal=${POD_NAME##*-}
self="$REDIS_ANNOUNCE_HOST:$REDIS_PORT"

ask_with_retries() {
    _attempt=1
    while :; do
        ask_sentinels_for_master && return 0
        [ "$_attempt" -ge "$SENTINEL_QUERY_ATTEMPTS" ] && return 1
        _attempt=$((_attempt + 1))
        sleep "$SENTINEL_QUERY_INTERVAL"
    done
}

names_me() {
    [ "$1" = "$REDIS_ANNOUNCE_HOST $REDIS_PORT" ]
}

# Step 4: once this replica's link to a master is up with no sync in progress (or it has been
# made master), CONFIG SET replica-priority to $1, then end. It also ends with the server (PID
# $2), and only then: a replica that never syncs stays unpromotable, and after
# SYNC_WATCH_REPORT_LOOKS looks (1 h) it says so once (docs/runbooks/pod-loss.md says what an
# operator checks then). Anything but a replica's or a master's INFO (an error reply, a timeout)
# is no sync. Failures are logged the first time and then once a minute.
promotable_once_synced() {
    _priority=$1
    _server=$2
    _looks=0
    _said=""
    while kill -0 "$_server" 2>/dev/null; do
        _looks=$((_looks + 1))
        if [ "$_looks" = "$SYNC_WATCH_REPORT_LOOKS" ]; then
            log "no sync with a master after $_looks looks; unpromotable (replica-priority 0) until it syncs"
        fi
        sleep "$SYNC_WATCH_INTERVAL"
        _info=$(redis_cli -h "$REDIS_HOST" -p "$REDIS_PORT" INFO replication 2>/dev/null) || continue
        _role=$(printf '%s\n' "$_info" | info_field role)
        case "$_role" in
            slave)
                [ "$(printf '%s\n' "$_info" | info_field master_link_status)" = up ] || continue
                [ "$(printf '%s\n' "$_info" | info_field master_sync_in_progress)" = 0 ] || continue
                ;;
            master) ;;
            *) continue ;;
        esac
        if _admin_auth=$(first_password "$AUTH_DIR/$ADMIN_USER-password" 2>/dev/null) &&
            printf 'CONFIG SET replica-priority %s\n' "$_priority" |
            REDISCLI_AUTH=$_admin_auth timeout "$CLI_TIMEOUT" "$CLI_BIN" --no-auth-warning $CLI_TLS \
                --user "$ADMIN_USER" -h "$REDIS_HOST" -p "$REDIS_PORT" 2>&1 | grep -qx OK; then
            log "synced with a master ($_role); replica-priority $_priority: promotable"
            return 0
        fi
        if [ -z "$_said" ] || [ $((_looks % 120)) = 0 ]; then
            log "synced, but CONFIG SET replica-priority $_priority as $ADMIN_USER failed; trying again"
            _said=yes
        fi
    done
}

master=$(ask_with_retries) || master=""

waited=0
while [ -n "$master" ] && names_me "$master" && [ "$waited" -lt "$SENTINEL_FAILOVER_WAIT" ]; do
    if master_in_doubt; then
        why="see it down or are failing it over"
    elif ! has_local_data "$REDIS_DATA_DIR" && pods_hold_data "$self"; then
        why="but this pod has no data and other pods do"
    else
        break
    fi
    [ "$waited" = 0 ] && log "the Sentinels name this pod as master $why; waiting for them"
    sleep 1
    waited=$((waited + 1))
    master=$(ask_sentinels_for_master) || master=""
done

if [ -n "$master" ] && names_me "$master"; then
    if ! has_local_data "$REDIS_DATA_DIR" && pods_hold_data "$self"; then
        log "the Sentinels still name this empty pod as master after ${SENTINEL_FAILOVER_WAIT}s; exiting to retry"
        exit 1
    fi
    role=master
    reason="the Sentinels name this pod as master"
elif [ -n "$master" ]; then
    role=replica
    set -- $master
    master_host=$1
    master_port=$2
    reason="the Sentinels name $master_host:$master_port as master"
elif master=$(find_master_among_pods "$self"); then
    role=replica
    set -- $master
    master_host=$1
    master_port=$2
    reason="no Sentinel majority; $master_host:$master_port reports ROLE master"
elif followed_by_pods "$self" "$REDIS_ANNOUNCE_HOST"; then
    role=master
    reason="no Sentinel majority, no pod reports ROLE master, and the other pods are replicas of this pod"
elif [ "$ordinal" = 0 ]; then
    role=master
    reason="no Sentinel majority, no pod reports ROLE master, and this is ordinal 0"
else
    role=replica
    master_host=$REDIS_SEED_HOST
    master_port=$REDIS_PORT
    reason="no Sentinel majority and no master among the pods; following ordinal 0 ($master_host)"
fi

umask 077
mkdir -p "$REDIS_RUN_DIR"
conf="$REDIS_RUN_DIR/redis.conf"
acl="$REDIS_RUN_DIR/users.acl"
render_acl_file "$REDIS_ACL_TEMPLATE" "$acl"
replication_auth=$(first_password "$AUTH_DIR/$REPLICATION_USER-password") || exit 1
{
    cat "$REDIS_CONFIG_TEMPLATE"
    printf '\n# Added by start-redis.sh for %s\n' "$POD_NAME"
    printf 'bind %s\ndir %s\n' "$REDIS_BIND" "$REDIS_DATA_DIR"
    if [ "$REDIS_TLS" = yes ]; then
        printf 'port 0\ntls-port %s\ntls-replication yes\ntls-auth-clients no\n' "$REDIS_PORT"
        printf 'tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n' "$TLS_CERT_FILE" "$TLS_KEY_FILE" "$TLS_CA_FILE"
    else
        printf 'port %s\n' "$REDIS_PORT"
    fi
    printf 'replica-announce-ip %s\nreplica-announce-port %s\n' "$REDIS_ANNOUNCE_HOST" "$REDIS_PORT"
    printf 'aclfile %s\nmasteruser %s\nmasterauth %s\n' "$acl" "$REPLICATION_USER" "$replication_auth"
    if [ "$role" = replica ]; then
        printf 'replicaof %s %s\n' "$master_host" "$master_port"
        printf 'replica-priority 0\n'
    fi
} >"$conf.tmp"
mv "$conf.tmp" "$conf"

log "starting $POD_NAME as $role: $reason"
unset SENTINEL_AUTH replication_auth
if [ "$role" = replica ]; then
    log "unpromotable (replica-priority 0) until it has synced with a master"
    # In a subshell that returns at once, so the watcher is no child of the server exec'd below
    # (which keeps this shell's PID, $$). In a container whose PID 1 is the server, the server
    # adopts it and reaps it with its next background save.
    (promotable_once_synced "$(configured_priority "$REDIS_CONFIG_TEMPLATE")" $$ </dev/null &)
fi
unset REDIS_AUTH
exec "$SERVER_BIN" "$conf"
