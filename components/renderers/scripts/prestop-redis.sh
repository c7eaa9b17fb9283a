#!/bin/sh
# prestop-redis.sh: hand mastership to a replica before this pod stops.
#
# A master that simply stops leaves the cluster without one for down-after-milliseconds plus the
# failover; writes acknowledged in its last moments are lost. So, when this pod is the master:
# 1. pause writes (CLIENT PAUSE ... WRITE) so the replicas catch up and nothing more is
#    acknowledged here;
# 2. ask a Sentinel for SENTINEL FAILOVER (INPROG: one is running already, e.g. an earlier ask
#    that timed out here but was carried out). When every Sentinel that answers says
#    NOGOODSLAVE, resume writes, wait a second and go back to 1: a replica restarted a moment
#    ago (a rolling update restarts the replicas first) is promotable once it has synced
#    (start-redis.sh), but a Sentinel only sees that at its next INFO of it, up to 10 s later;
# 3. wait until every Sentinel names another master.
# All of it within PRESTOP_TIMEOUT seconds of wall-clock time. Once a failover has started,
# writes stay paused to the end, also when the Sentinels have not finished it by then: the
# shutdown follows, and a write acknowledged here meanwhile would be lost. If no Sentinel takes
# the failover in time, writes are resumed and the pod stops as it would have without the hook.
set -u
. "$(dirname "$0")/common.sh"

: "${REDIS_HOST:=127.0.0.1}"
: "${REDIS_ANNOUNCE_HOST:=${POD_NAME:-$(hostname)}.@@REDIS_HEADLESS_DOMAIN@@}"
: "${PRESTOP_TIMEOUT:=@@PRESTOP_TIMEOUT@@}"

load_password
role=$(redis_cli -h "$REDIS_HOST" -p "$REDIS_PORT" ROLE 2>/dev/null | sed -n 1p)
if [ "$role" != master ]; then
    log "role is '$role': nothing to hand over"
    exit 0
fi

deadline=$(($(date +%s) + PRESTOP_TIMEOUT))
left() { echo $((deadline - $(date +%s))); }
started=""
asked=""
while :; do
    redis_cli -h "$REDIS_HOST" -p "$REDIS_PORT" CLIENT PAUSE "$((PRESTOP_TIMEOUT * 1000))" WRITE >/dev/null
    no_good_replica=""
    for addr in $SENTINEL_ADDRS; do
        answer=$(sentinel_at "$addr" SENTINEL FAILOVER "$MASTER_NAME" 2>&1)
        case "$answer" in
            OK | INPROG*)
                started=$addr
                break
                ;;
            NOGOODSLAVE*) no_good_replica=yes ;;
        esac
    done
    [ -n "$started" ] && break
    redis_cli -h "$REDIS_HOST" -p "$REDIS_PORT" CLIENT UNPAUSE >/dev/null
    if [ -z "$no_good_replica" ] || [ "$(left)" -le 1 ]; then
        log "no Sentinel accepted a failover${no_good_replica:+ (no promotable replica in their eyes)}; stopping as master"
        exit 0
    fi
    [ -z "$asked" ] && log "no promotable replica in the Sentinels' eyes yet; writes go on while they look again"
    asked=yes
    sleep 1
done

# Done when every Sentinel that answers names another master: clients may ask any of them.
others_named() {
    _other=""
    for _addr in $SENTINEL_ADDRS; do
        _host=$(sentinel_at "$_addr" SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | sed -n 1p)
        [ -n "$_host" ] || continue
        [ "$_host" = "$REDIS_ANNOUNCE_HOST" ] && return 1
        _other=$_host
    done
    [ -n "$_other" ] && echo "$_other"
}

log "failover of $MASTER_NAME started by $started; waiting up to $(left)s more"
while [ "$(left)" -gt 0 ]; do
    if host=$(others_named); then
        log "the Sentinels now name $host as master"
        exit 0
    fi
    sleep 1
done
log "no new master named within ${PRESTOP_TIMEOUT}s; stopping with writes paused (the failover goes on)"
exit 0
