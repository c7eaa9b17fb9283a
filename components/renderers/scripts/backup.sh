#!/bin/sh
# backup.sh [dump|upload|all]: one verified RDB backup of one data tier, to S3.
#
# The tier is BACKUP_TIER (cache, the default, or state); MASTER_NAME (the name the Sentinels
# monitor its master by) must be that tier's, and the CronJob's pod sets both per container: it
# backs up the state tier first (dump-state, upload-state), then the cache (dump-cache,
# upload-cache), so a run succeeds only when both tiers are stored.
#
# dump   (Redis image) pick the source through the Sentinels: the healthy replica furthest ahead
#        (Sentinel flags without s_down/o_down/disconnected, and its own INFO says
#        master_link_status:up and no sync in progress); the master only when no replica is
#        healthy. Stream its RDB with `redis-cli --rdb`, check the exit code, verify the file
#        with the line's check-rdb (valkey-check-rdb, redis-check-rdb), and write dump.rdb +
#        dump.meta (tier, master name, source, offset, time, sha256) to BACKUP_DIR.
# upload (AWS CLI image) re-check the dump's sha256 against dump.meta and its tier against
#        BACKUP_TIER, then PutObject to
#        s3://BACKUP_BUCKET/BACKUP_PREFIX/<tier>/YYYY/MM/DD/<time>-<source>.rdb with that SHA-256
#        as x-amz-checksum-sha256 (S3 refuses the object if the bytes differ) and the metadata;
#        confirm size and checksum with HeadObject.
# all    both, in one process (the local drill; an image holding both tool sets).
# Any failure logs "FAILED: <why>" and exits 1.
#
# Credentials and connections: on the data nodes the dump acts as the ACL user `backup`
# (components/acl.py grants it sync, replconf, ping, info and role: what `redis-cli --rdb` and the
# replica checks send), with the first line of its mounted password file; the Sentinels get their
# own password (SENTINEL_PASSWORD_FILE). Every connection goes through common.sh's redis_cli /
# sentinel_cli, the one place that adds the user, REDISCLI_AUTH (in redis-cli's own environment,
# never on a command line) and, with REDIS_TLS=yes, TLS verified against TLS_CA_FILE.
set -eu
: "${REDIS_USER:=@@BACKUP_USER@@}"
. "$(dirname "$0")/common.sh"
. "$(dirname "$0")/backup-common.sh"
: "${BACKUP_TIER:=cache}"
check_tier "$BACKUP_TIER" BACKUP_TIER

# Seconds the whole RDB transfer may take (the Job's activeDeadlineSeconds bounds the run).
: "${DUMP_TIMEOUT:=1200}"

# The last non-empty line of a redis-cli output, without CR.
last_line() {
    printf '%s\n' "$1" | tr -d '\r' | sed '/^[[:space:]]*$/d' | tail -n 1
}

# Prints why a redis-cli output ($3) from the $1 at $2 (host:port) is a refusal that asking another
# node would not cure (a wrong password, a command the ACL user lacks, a failed TLS handshake);
# returns 1 when it is none of these.
refusal() {
    case "$3" in
        *WRONGPASS* | *NOAUTH* | *"invalid password"* | *"AUTH failed"* | *"invalid username-password"*)
            if [ "$1" = Sentinel ]; then
                echo "wrong Sentinel password (Sentinel $2 refused the first line of $SENTINEL_PASSWORD_FILE)"
            else
                echo "wrong password for the ACL user '$REDIS_USER': the $1 $2 refused the first line of $REDIS_PASSWORD_FILE"
            fi
            ;;
        *NOPERM*) echo "the ACL user '$REDIS_USER' lacks a permission on the $1 $2: $(last_line "$3")" ;;
        *SSL* | *TLS* | *certificate*)
            echo "TLS to the $1 $2 failed (REDIS_TLS=$REDIS_TLS, CA $TLS_CA_FILE): $(last_line "$3")"
            ;;
        *) return 1 ;;
    esac
}

# Prints "ip port offset" of every replica one Sentinel ($1) considers healthy, furthest first.
# When that Sentinel does not answer: prints its error and returns 1; when it refuses us
# (see refusal): prints why and returns 3.
healthy_replicas_of() {
    _status=0
    _reply=$(sentinel_at "$1" SENTINEL REPLICAS "$MASTER_NAME" 2>&1) || _status=$?
    if refusal Sentinel "$1" "$_reply"; then
        return 3
    fi
    _unanswered=""
    [ "$_status" = 0 ] || _unanswered=yes
    case "$_reply" in
        ERR* | *"No such master"* | *"Could not connect"*) _unanswered=yes ;;
    esac
    if [ -n "$_unanswered" ]; then
        echo "$1: $(last_line "$_reply")"
        return 1
    fi
    # redis-cli prints the nested reply one element a line: name, value, name, value, ...
    printf '%s\n' "$_reply" | awk '
        function flush() {
            if (ip != "" && flags !~ /s_down|o_down|disconnected/ && link == "ok") print ip, port, offset
            ip = ""; port = ""; flags = ""; link = ""; offset = 0
        }
        NR % 2 == 1 { field = $0; next }
        field == "name" { flush() }
        field == "ip" { ip = $0 }
        field == "port" { port = $0 }
        field == "flags" { flags = $0 }
        field == "master-link-status" { link = $0 }
        field == "slave-repl-offset" { offset = $0 }
        END { flush() }' | sort -k3,3nr
}

# Prints "host port role" of the node to dump.
choose_source() {
    _asked=""
    _last_error=""
    for _sentinel in $SENTINEL_ADDRS; do
        _status=0
        _candidates=$(healthy_replicas_of "$_sentinel") || _status=$?
        [ "$_status" = 3 ] && fail "$_candidates"
        if [ "$_status" != 0 ]; then
            _last_error=$_candidates
            continue
        fi
        _asked=yes
        while read -r _host _port _offset; do
            [ -n "$_host" ] || continue
            _info=$(cli_at "$_host:$_port" INFO replication 2>&1) || true
            _why=$(refusal replica "$_host:$_port" "$_info") && fail "$_why"
            [ "$(printf '%s\n' "$_info" | info_field role)" = slave ] || continue
            [ "$(printf '%s\n' "$_info" | info_field master_link_status)" = up ] || continue
            [ "$(printf '%s\n' "$_info" | info_field master_sync_in_progress)" = 0 ] || continue
            echo "$_host $_port replica"
            return 0
        done <<CANDIDATES
$_candidates
CANDIDATES
        break
    done
    [ -n "$_asked" ] ||
        fail "no Sentinel of '$SENTINEL_ADDRS' answered SENTINEL REPLICAS $MASTER_NAME: Redis unreachable (last error: $_last_error)"
    log "no healthy replica; falling back to the master"
    _master=$(ask_sentinels_for_master) || fail "no replica is healthy and the Sentinels name no master"
    set -- $_master
    _info=$(cli_at "$1:$2" INFO replication 2>&1) || true
    _why=$(refusal master "$1:$2" "$_info") && fail "$_why"
    [ "$(printf '%s\n' "$_info" | info_field role)" = master ] || fail "$1:$2 is named master but is not one"
    echo "$1 $2 master"
}

# A short name for the source in the object key: the pod name, or the address as given.
source_label() {
    case "$1" in
        *[!0-9.]*) echo "${1%%.*}" ;;
        *) echo "$1" ;;
    esac
}

# Refuses a MASTER_NAME that is not BACKUP_TIER's: the other tier's data under this tier's prefix
# would restore the wrong dataset.
check_master_name() {
    _expected=$(tier_master_name "$BACKUP_TIER")
    [ -n "$_expected" ] || fail "BACKUP_TIER=$BACKUP_TIER: SENTINEL_MONITORS ('$SENTINEL_MONITORS') names no master for it"
    [ "$MASTER_NAME" = "$_expected" ] ||
        fail "MASTER_NAME=$MASTER_NAME is not the $BACKUP_TIER tier's master (the Sentinels monitor that" \
            "as '$_expected'): set MASTER_NAME=$_expected with BACKUP_TIER=$BACKUP_TIER"
}

dump() {
    check_master_name
    load_password
    mkdir -p "$BACKUP_DIR"
    rm -f "$BACKUP_DIR/dump.rdb" "$BACKUP_DIR/dump.rdb.part" "$BACKUP_DIR/dump.meta"
    chosen=$(choose_source) || exit 1
    set -- $chosen
    host=$1 port=$2 role=$3
    log "dumping the $BACKUP_TIER tier ($MASTER_NAME) from the $role $host:$port"
    started=$(date -u +%Y%m%dT%H%M%SZ)
    status=0
    out=$(CLI_TIMEOUT=$DUMP_TIMEOUT cli_at "$host:$port" --rdb "$BACKUP_DIR/dump.rdb.part" 2>&1) || status=$?
    if [ "$status" != 0 ]; then
        why=$(refusal "$role" "$host:$port" "$out") && fail "$CLI_BIN --rdb: $why"
        fail "$CLI_BIN --rdb from $host:$port exited $status: $(last_line "$out")"
    fi
    [ -s "$BACKUP_DIR/dump.rdb.part" ] || fail "$CLI_BIN --rdb from $host:$port wrote an empty file"
    report=$(check_rdb "$BACKUP_DIR/dump.rdb.part") || fail "the dump of $host:$port is corrupt: $report"
    offset=$(printf '%s\n' "$report" | sed -n "s/.*AUX FIELD repl-offset = '\([0-9]*\)'.*/\1/p" | head -n 1)
    keys=$(printf '%s\n' "$report" | sed -n 's/^\[info\] \([0-9]*\) keys read.*/\1/p')
    sum=$(sha256_hex "$BACKUP_DIR/dump.rdb.part")
    {
        echo "tier=$BACKUP_TIER"
        echo "master=$MASTER_NAME"
        echo "source=$(source_label "$host")"
        echo "address=$host:$port"
        echo "role=$role"
        echo "offset=${offset:-0}"
        echo "time=$started"
        echo "keys=${keys:-0}"
        echo "sha256=$sum"
    } >"$BACKUP_DIR/dump.meta"
    mv "$BACKUP_DIR/dump.rdb.part" "$BACKUP_DIR/dump.rdb"
    log "dump verified: $(wc -c <"$BACKUP_DIR/dump.rdb" | tr -d ' ') bytes, ${keys:-0} keys, offset ${offset:-0}, sha256 $sum"
}

upload() {
    file=$BACKUP_DIR/dump.rdb
    meta=$BACKUP_DIR/dump.meta
    [ -s "$file" ] && [ -s "$meta" ] || fail "no verified dump in $BACKUP_DIR (run 'backup.sh dump' first)"
    sum=$(meta_field sha256 "$meta")
    [ "$(sha256_hex "$file")" = "$sum" ] || fail "$file no longer matches the sha256 recorded at dump time"
    dumped=$(meta_field tier "$meta")
    [ "$dumped" = "$BACKUP_TIER" ] ||
        fail "the dump in $BACKUP_DIR is of the ${dumped:-unknown} tier, not BACKUP_TIER=$BACKUP_TIER (run 'backup.sh dump' with the same BACKUP_TIER)"
    stamp=$(meta_field time "$meta")
    source=$(meta_field source "$meta")
    day=$(printf '%s' "$stamp" | sed 's#^\(....\)\(..\)\(..\).*#\1/\2/\3#')
    key="$(tier_prefix "$BACKUP_TIER")/$day/$stamp-$source.rdb"
    size=$(wc -c <"$file" | tr -d ' ')
    metadata="tier=$BACKUP_TIER,master=$(meta_field master "$meta"),source=$source"
    metadata="$metadata,role=$(meta_field role "$meta"),offset=$(meta_field offset "$meta"),time=$stamp"
    metadata="$metadata,keys=$(meta_field keys "$meta"),sha256=$sum"
    log "uploading the $BACKUP_TIER tier's $size bytes to s3://$BACKUP_BUCKET/$key"
    checksum=$(hex_to_base64 "$sum")
    out=$(s3api put-object --bucket "$BACKUP_BUCKET" --key "$key" --body "$file" \
        --checksum-algorithm SHA256 --checksum-sha256 "$checksum" --content-type application/octet-stream \
        --metadata "$metadata" --output text 2>&1) ||
        fail "upload to s3://$BACKUP_BUCKET/$key refused: $(printf '%s' "$out" | tr '\n' ' ')"
    stored=$(s3api head-object --bucket "$BACKUP_BUCKET" --key "$key" --checksum-mode ENABLED \
        --query '[ContentLength, Metadata.sha256, ChecksumSHA256]' --output text 2>&1) ||
        fail "uploaded object s3://$BACKUP_BUCKET/$key cannot be read back: $(printf '%s' "$stored" | tr '\n' ' ')"
    [ "$(printf '%s' "$stored" | tr -s ' \t' '  ')" = "$size $sum $checksum" ] ||
        fail "s3://$BACKUP_BUCKET/$key reads back as '$stored', expected '$size $sum $checksum'"
    log "backup of the $BACKUP_TIER tier stored: s3://$BACKUP_BUCKET/$key"
    echo "$key"
}

case "${1:-all}" in
    dump) dump ;;
    upload) upload ;;
    all)
        dump
        upload
        ;;
    *)
        log "usage: backup.sh [dump|upload|all]"
        exit 2
        ;;
esac
