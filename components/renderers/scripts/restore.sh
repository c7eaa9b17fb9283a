#!/bin/sh
# restore.sh list TIER | fetch TIER [KEY|latest] [DIR] | prepare TIER DATA_DIR
#
# TIER is the data tier the backup is of and the data directory is for: state (the decisions:
# idempotency records, rate-limit counters, workflow versions; in a full loss restore it FIRST)
# or cache (the LRU cache; it may even start empty and refill). Its backups are under
# s3://BACKUP_BUCKET/BACKUP_PREFIX/TIER/ (the cache's from before the tier split directly under
# BACKUP_PREFIX/YYYY/, still listed for the cache). A key, an object or a data directory of the
# other tier is refused.
#
# list     the tier's backups, oldest first: key, bytes, time.
# fetch    download one backup of the tier (its latest by default) to DIR/dump.rdb (default
#          BACKUP_DIR) and verify it: under the tier's prefix, its metadata's tier, its SHA-256
#          against the object's recorded checksum, and redis-check-rdb where the image has it. A
#          mismatch or a corrupt file is refused and nothing is left.
# prepare  turn DATA_DIR/dump.rdb into a data directory the tier's Redis will load. The
#          rendered redis.conf has appendonly yes, and a Redis with AOF on and no AOF files
#          starts EMPTY, ignoring dump.rdb (and later overwrites it). So: verify the RDB (and that
#          it was fetched for this tier, and that REDIS_CONFIG_TEMPLATE is this tier's redis.conf),
#          load it into a throw-away redis-server on a unix socket with appendonly no, switch AOF
#          on (CONFIG SET appendonly yes rewrites the whole dataset into appendonlydir/), wait for
#          the rewrite, shut down. The pod's own start script then finds data and loads the AOF.
#          Users and TLS are not part of a backup: the RDB holds data only, and the start script
#          gives the restored master the users of users.acl with the passwords of the mounted
#          Secret, and its TLS listener, as at any start.
# Any failure logs "FAILED: <why>" and exits 1.
set -eu
. "$(dirname "$0")/common.sh"
. "$(dirname "$0")/backup-common.sh"

: "${REDIS_CONFIG_TEMPLATE:=@@REDIS_CONFIG_DIR@@/redis.conf}"
# Seconds the throw-away server may take to load the RDB and to rewrite the AOF.
: "${PREPARE_TIMEOUT:=600}"

USAGE="usage: restore.sh list TIER | fetch TIER [KEY|latest] [DIR] | prepare TIER DATA_DIR (TIER: ${BACKUP_TIERS% *} or ${BACKUP_TIERS#* })"

# The tier argument: present and one of BACKUP_TIERS, or the usage and exit 1.
tier_arg() {
    [ -n "${1:-}" ] || fail "no tier given: $USAGE"
    check_tier "$1" "tier"
}

# The backups of tier $1, oldest first: key, bytes, time (tab-separated).
list_keys() {
    # The cache's pre-split backups are directly under BACKUP_PREFIX/, so list it all and keep the tier's.
    _out=$(s3api list-objects-v2 --bucket "$BACKUP_BUCKET" --prefix "$BACKUP_PREFIX/" \
        --query 'Contents[].[Key, Size, LastModified]' --output text 2>&1) ||
        fail "cannot list s3://$BACKUP_BUCKET/$BACKUP_PREFIX/: $(printf '%s' "$_out" | tr '\n' ' ')"
    # Keys carry their UTC time (.../YYYY/MM/DD/<stamp>-...), so name order is time order (the
    # pre-split BACKUP_PREFIX/YYYY/ keys sort before BACKUP_PREFIX/cache/, and are older).
    # The same rule as key_of_tier: under BACKUP_PREFIX/TIER/, or (cache) BACKUP_PREFIX/YYYY/.
    printf '%s\n' "$_out" | awk -F '\t' -v p="$BACKUP_PREFIX/" -v t="$1" '
        $1 !~ /\.rdb$/ { next }
        index($1, p t "/") == 1 { print; next }
        t == "cache" && index($1, p) == 1 && substr($1, length(p) + 1) ~ /^[0-9][0-9][0-9][0-9]\// { print }' |
        sort -k1,1 || true
}

fetch() {
    tier=${1:-}
    tier_arg "$tier"
    key=${2:-latest}
    dir=${3:-$BACKUP_DIR}
    if [ "$key" = latest ]; then
        key=$(list_keys "$tier" | tail -n 1 | cut -f 1)
        [ -n "$key" ] || fail "no backup of the $tier tier under s3://$BACKUP_BUCKET/$(tier_prefix "$tier")/"
    fi
    key_of_tier "$tier" "$key" ||
        fail "$key is not a backup of the $tier tier: its backups are under $(tier_prefix "$tier")/ (see 'restore.sh list $tier')"
    mkdir -p "$dir"
    part="$dir/dump.rdb.part"
    rm -f "$part"
    log "downloading s3://$BACKUP_BUCKET/$key"
    out=$(s3api get-object --bucket "$BACKUP_BUCKET" --key "$key" "$part" \
        --query '[Metadata.sha256, Metadata.tier]' --output text 2>&1) ||
        fail "cannot download s3://$BACKUP_BUCKET/$key: $(printf '%s' "$out" | tr '\n' ' ')"
    set -- $(printf '%s\n' "$out" | tail -n 1)
    expected=${1:-} recorded_tier=${2:-None}
    case "$expected" in
        '' | None | *[!0-9a-f]*)
            rm -f "$part"
            fail "s3://$BACKUP_BUCKET/$key carries no sha256 metadata; not a backup written by backup.sh"
            ;;
    esac
    if [ "$recorded_tier" = None ]; then
        # Pre-split backups (BACKUP_PREFIX/YYYY/...) carry no tier: they are the cache's.
        case "$key" in
            "$(tier_prefix "$tier")/"*)
                rm -f "$part"
                fail "s3://$BACKUP_BUCKET/$key carries no tier metadata; not a $tier-tier backup written by backup.sh"
                ;;
        esac
        recorded_tier=cache
    fi
    if [ "$recorded_tier" != "$tier" ]; then
        rm -f "$part"
        fail "s3://$BACKUP_BUCKET/$key is a backup of the $recorded_tier tier (its metadata), not of the $tier tier"
    fi
    actual=$(sha256_hex "$part")
    if [ "$actual" != "$expected" ]; then
        rm -f "$part"
        fail "s3://$BACKUP_BUCKET/$key is damaged: sha256 $actual, recorded $expected"
    fi
    if command -v "$CHECK_RDB_BIN" >/dev/null 2>&1; then
        if ! report=$(check_rdb "$part"); then
            rm -f "$part"
            fail "s3://$BACKUP_BUCKET/$key is not a valid RDB: $report"
        fi
    else
        log "$CHECK_RDB_BIN is not in this image; 'restore.sh prepare $tier' checks the file"
    fi
    mv "$part" "$dir/dump.rdb"
    echo "$actual" >"$dir/dump.rdb.sha256"
    echo "$tier" >"$dir/dump.rdb.tier"
    log "restored s3://$BACKUP_BUCKET/$key ($tier tier) to $dir/dump.rdb (sha256 $actual)"
    echo "$key"
}

local_cli() {
    timeout "$CLI_TIMEOUT" "$CLI_BIN" -s "$socket" "$@"
}

prepare() {
    tier=${1:-}
    tier_arg "$tier"
    data=${2:-}
    [ -n "$data" ] || fail "no data directory given: $USAGE"
    rdb="$data/dump.rdb"
    [ -s "$rdb" ] || fail "$rdb is missing or empty (run 'restore.sh fetch $tier' into $data first)"
    if [ -f "$rdb.tier" ] && [ "$(cat "$rdb.tier")" != "$tier" ]; then
        fail "$rdb was fetched as a backup of the $(cat "$rdb.tier") tier, not of the $tier tier"
    fi
    if [ -f "$rdb.sha256" ] && [ "$(sha256_hex "$rdb")" != "$(cat "$rdb.sha256")" ]; then
        fail "$rdb does not match the sha256 recorded when it was fetched"
    fi
    report=$(check_rdb "$rdb") || fail "$rdb is not a valid RDB: $report"
    expected=$(printf '%s\n' "$report" | sed -n 's/^\[info\] \([0-9]*\) keys read.*/\1/p')
    if [ -e "$data/appendonlydir" ]; then
        fail "$data/appendonlydir exists: Redis would load that AOF instead of the backup; move it away first"
    fi
    [ -r "$REDIS_CONFIG_TEMPLATE" ] || fail "redis.conf template $REDIS_CONFIG_TEMPLATE is missing"
    # The rendered redis.conf names its tier on its first line ("# redis.conf of the <tier> tier ...").
    conf_tier=$(sed -n '1s/^# redis.conf of the \([a-z]*\) tier.*/\1/p' "$REDIS_CONFIG_TEMPLATE")
    if [ -n "$conf_tier" ] && [ "$conf_tier" != "$tier" ]; then
        fail "$REDIS_CONFIG_TEMPLATE is the $conf_tier tier's redis.conf, not the $tier tier's (mount that tier's ConfigMap)"
    fi
    # No TCP or TLS listener, and the template has no aclfile (start-redis.sh adds it), so the
    # throw-away server's default user needs no password: only this script, through a socket only
    # its user may open, can reach it.
    unset REDISCLI_AUTH
    tmp=$(mktemp -d)
    socket="$tmp/redis.sock"
    "$SERVER_BIN" "$REDIS_CONFIG_TEMPLATE" --port 0 --unixsocket "$socket" --unixsocketperm 700 \
        --dir "$data" --appendonly no --save "" --logfile "$tmp/redis.log" &
    pid=$!
    trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
    waited=0
    until [ "$(local_cli PING 2>/dev/null)" = PONG ]; do
        kill -0 "$pid" 2>/dev/null || fail "$SERVER_BIN exited while loading $rdb: $(tail -n 3 "$tmp/redis.log")"
        [ "$waited" -lt "$((PREPARE_TIMEOUT * 10))" ] || fail "$rdb not loaded after ${PREPARE_TIMEOUT}s"
        sleep 0.1
        waited=$((waited + 1))
    done
    loaded=$(local_cli DBSIZE)
    log "loaded $loaded keys from $rdb ($expected in the file, less any that expired since)"
    [ "$(local_cli CONFIG SET appendonly yes)" = OK ] || fail "CONFIG SET appendonly yes refused"
    waited=0
    while :; do
        info=$(local_cli INFO persistence)
        if [ "$(printf '%s\n' "$info" | info_field aof_rewrite_in_progress)" = 0 ] &&
            [ "$(printf '%s\n' "$info" | info_field aof_rewrite_scheduled)" = 0 ] &&
            [ -n "$(find "$data/appendonlydir" -name '*.manifest' 2>/dev/null)" ]; then
            break
        fi
        [ "$waited" -lt "$((PREPARE_TIMEOUT * 10))" ] || fail "AOF rewrite not done after ${PREPARE_TIMEOUT}s"
        sleep 0.1
        waited=$((waited + 1))
    done
    [ "$(printf '%s\n' "$info" | info_field aof_last_bgrewrite_status)" = ok ] ||
        fail "the AOF rewrite failed: $(tail -n 3 "$tmp/redis.log")"
    local_cli SHUTDOWN >/dev/null 2>&1 || true
    wait "$pid" || true
    trap - EXIT
    rm -rf "$tmp" "$rdb.sha256" "$rdb.tier"
    log "$data is ready for the $tier tier: $loaded keys in dump.rdb and appendonlydir/; start its master on it"
}

case "${1:-}" in
    list)
        tier_arg "${2:-}"
        list_keys "$2"
        ;;
    fetch)
        shift
        fetch "$@"
        ;;
    prepare)
        shift
        prepare "$@"
        ;;
    *)
        log "$USAGE"
        exit 2
        ;;
esac
