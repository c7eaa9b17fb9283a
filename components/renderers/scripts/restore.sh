#!/bin/sh
# restore.sh list | fetch [KEY|latest] [DIR] | prepare DATA_DIR
#
# list     the backups under s3://BACKUP_BUCKET/BACKUP_PREFIX/, oldest first: key, bytes, time.
# fetch    download one backup (the latest by default) to DIR/dump.rdb (default BACKUP_DIR) and
#          verify it: its SHA-256 against the object's recorded checksum, and redis-check-rdb
#          where the image has it. A mismatch or a corrupt file is refused and nothing is left.
# prepare  turn DATA_DIR/dump.rdb into a data directory the stack's Redis will load. The
#          rendered redis.conf has appendonly yes, and a Redis with AOF on and no AOF files
#          starts EMPTY, ignoring dump.rdb (and later overwrites it). So: verify the RDB, load
#          it into a throw-away redis-server on a unix socket with appendonly no, switch AOF on
#          (CONFIG SET appendonly yes rewrites the whole dataset into appendonlydir/), wait for
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

list_keys() {
    _out=$(s3api list-objects-v2 --bucket "$BACKUP_BUCKET" --prefix "$BACKUP_PREFIX/" \
        --query 'Contents[].[Key, Size, LastModified]' --output text 2>&1) ||
        fail "cannot list s3://$BACKUP_BUCKET/$BACKUP_PREFIX/: $(printf '%s' "$_out" | tr '\n' ' ')"
    # Keys carry their UTC time (YYYY/MM/DD/<stamp>-...), so name order is time order.
    printf '%s\n' "$_out" | grep '\.rdb[[:space:]]' | sort -k1,1 || true
}

fetch() {
    key=${1:-latest}
    dir=${2:-$BACKUP_DIR}
    if [ "$key" = latest ]; then
        key=$(list_keys | tail -n 1 | cut -f 1)
        [ -n "$key" ] || fail "no backup under s3://$BACKUP_BUCKET/$BACKUP_PREFIX/"
    fi
    mkdir -p "$dir"
    part="$dir/dump.rdb.part"
    rm -f "$part"
    log "downloading s3://$BACKUP_BUCKET/$key"
    out=$(s3api get-object --bucket "$BACKUP_BUCKET" --key "$key" "$part" \
        --query 'Metadata.sha256' --output text 2>&1) ||
        fail "cannot download s3://$BACKUP_BUCKET/$key: $(printf '%s' "$out" | tr '\n' ' ')"
    expected=$(printf '%s\n' "$out" | tail -n 1)
    case "$expected" in
        '' | None | *[!0-9a-f]*)
            rm -f "$part"
            fail "s3://$BACKUP_BUCKET/$key carries no sha256 metadata; not a backup written by backup.sh"
            ;;
    esac
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
        log "$CHECK_RDB_BIN is not in this image; 'restore.sh prepare' checks the file"
    fi
    mv "$part" "$dir/dump.rdb"
    echo "$actual" >"$dir/dump.rdb.sha256"
    log "restored s3://$BACKUP_BUCKET/$key to $dir/dump.rdb (sha256 $actual)"
    echo "$key"
}

local_cli() {
    timeout "$CLI_TIMEOUT" "$CLI_BIN" -s "$socket" "$@"
}

prepare() {
    data=${1:-}
    [ -n "$data" ] || fail "usage: restore.sh prepare DATA_DIR"
    rdb="$data/dump.rdb"
    [ -s "$rdb" ] || fail "$rdb is missing or empty (run 'restore.sh fetch' into $data first)"
    if [ -f "$rdb.sha256" ] && [ "$(sha256_hex "$rdb")" != "$(cat "$rdb.sha256")" ]; then
        fail "$rdb does not match the sha256 recorded when it was fetched"
    fi
    report=$(check_rdb "$rdb") || fail "$rdb is not a valid RDB: $report"
    expected=$(printf '%s\n' "$report" | sed -n 's/^\[info\] \([0-9]*\) keys read.*/\1/p')
    if [ -e "$data/appendonlydir" ]; then
        fail "$data/appendonlydir exists: Redis would load that AOF instead of the backup; move it away first"
    fi
    [ -r "$REDIS_CONFIG_TEMPLATE" ] || fail "redis.conf template $REDIS_CONFIG_TEMPLATE is missing"
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
    rm -rf "$tmp" "$rdb.sha256"
    log "$data is ready: $loaded keys in dump.rdb and appendonlydir/; start the master on it"
}

case "${1:-}" in
    list)
        list_keys
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
        log "usage: restore.sh list | fetch [KEY|latest] [DIR] | prepare DATA_DIR"
        exit 2
        ;;
esac
