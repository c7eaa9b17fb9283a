# common.sh: sourced by every script of the cache layer (POSIX sh; the image's shell is BusyBox ash).
#
# Every address, port, path and credential comes from the environment. The defaults below are the
# Kubernetes ones, filled in by components/renderers/scripts.py from the stack settings; the local
# rehearsal overrides them to run the very same scripts on loopback addresses.

: "${MASTER_NAME:=@@MASTER_NAME@@}"
: "${REDIS_PORT:=@@REDIS_PORT@@}"
: "${SENTINEL_PORT:=@@SENTINEL_PORT@@}"
# Every Sentinel pod and every Redis pod as host:port (stable DNS names).
: "${SENTINEL_ADDRS:=@@SENTINEL_ADDRS@@}"
: "${REDIS_ADDRS:=@@REDIS_ADDRS@@}"
# Ordinal 0: the master of a cluster that nobody knows a master of yet.
: "${REDIS_SEED_HOST:=@@REDIS_SEED_HOST@@}"
# The data tiers (the LRU cache and the state tier that never evicts) are one master each: the
# scripts of a data pod act on its own tier (MASTER_NAME, REDIS_ADDRS, REDIS_SEED_HOST above); a
# Sentinel monitors every tier, one "name=host:port,host:port,..." per tier (ordinal 0 first).
: "${SENTINEL_MONITORS:=@@SENTINEL_MONITORS@@}"
# Credentials: one mounted Secret file per ACL user (components/acl.py), one password per line;
# the first line is the one to send, every line is accepted (two during a password rotation).
: "${AUTH_DIR:=@@AUTH_DIR@@}"
# The ACL user these scripts act as on the data nodes, and the Sentinels' own password.
: "${REDIS_USER:=@@SCRIPT_USER@@}"
: "${REDIS_PASSWORD_FILE:=$AUTH_DIR/$REDIS_USER-password}"
: "${SENTINEL_PASSWORD_FILE:=$AUTH_DIR/@@SENTINEL_PASSWORD_KEY@@}"
# TLS: with REDIS_TLS=yes every node and Sentinel listens on TLS only (same ports) and every
# connection verifies the peer against TLS_CA_FILE.
: "${REDIS_TLS:=@@TLS@@}"
: "${TLS_DIR:=@@TLS_DIR@@}"
: "${TLS_CERT_FILE:=$TLS_DIR/tls.crt}"
: "${TLS_KEY_FILE:=$TLS_DIR/tls.key}"
: "${TLS_CA_FILE:=$TLS_DIR/ca.crt}"
# Seconds one redis-cli call may take before it is abandoned.
: "${CLI_TIMEOUT:=3}"
CLI_TLS=""
if [ "$REDIS_TLS" = yes ]; then
    CLI_TLS="--tls --cacert $TLS_CA_FILE"
fi
# The server line (components/server_lines.py): its tools are valkey-server, valkey-cli, ... or
# redis-server, redis-cli, ... The image decides (Valkey's names when it has them); SERVER_LINE
# chooses explicitly (the rehearsal sets it, since a test machine has both lines).
case "${SERVER_LINE:-}" in
    redis | valkey) ;;
    '') if command -v valkey-server >/dev/null 2>&1; then SERVER_LINE=valkey; else SERVER_LINE=redis; fi ;;
    *)
        printf 'SERVER_LINE=%s: must be redis or valkey\n' "$SERVER_LINE" >&2
        exit 64
        ;;
esac
SERVER_BIN=$SERVER_LINE-server
SENTINEL_BIN=$SERVER_LINE-sentinel
CLI_BIN=$SERVER_LINE-cli
CHECK_RDB_BIN=$SERVER_LINE-check-rdb

log() {
    printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${0##*/}" "$*" >&2
}

# Prints the first line of a password file; fails (with a log line) when it is missing or empty.
# `read` is a shell builtin, so a password never shows up in any process's argv.
first_password() {
    if [ ! -r "$1" ]; then
        log "password file $1 is missing or unreadable"
        return 1
    fi
    _pw=""
    IFS= read -r _pw <"$1" || [ -n "$_pw" ]
    if [ -z "$_pw" ]; then
        log "password file $1 is empty"
        return 1
    fi
    printf '%s\n' "$_pw"
}

# Reads this script's credentials: REDIS_AUTH (its ACL user's password on the data nodes) and
# SENTINEL_AUTH (the Sentinels' password). Both stay unexported shell variables; redis-cli gets
# them through REDISCLI_AUTH in its own environment only, never on its command line.
load_password() {
    REDIS_AUTH=$(first_password "$REDIS_PASSWORD_FILE") || exit 1
    SENTINEL_AUTH=$(first_password "$SENTINEL_PASSWORD_FILE") || exit 1
}

# redis-cli against a data node, as REDIS_USER.
redis_cli() {
    REDISCLI_AUTH=$REDIS_AUTH timeout "$CLI_TIMEOUT" "$CLI_BIN" --no-auth-warning $CLI_TLS --user "$REDIS_USER" "$@"
}

# redis-cli against a Sentinel (its password, no user name).
sentinel_cli() {
    REDISCLI_AUTH=$SENTINEL_AUTH timeout "$CLI_TIMEOUT" "$CLI_BIN" --no-auth-warning $CLI_TLS "$@"
}

# redis-cli against one data node given as host:port.
cli_at() {
    _addr=$1
    shift
    redis_cli -h "${_addr%:*}" -p "${_addr##*:}" "$@"
}

# redis-cli against one Sentinel given as host:port.
sentinel_at() {
    _addr=$1
    shift
    sentinel_cli -h "${_addr%:*}" -p "${_addr##*:}" "$@"
}

# The SHA-256 of every password in a password file, as ACL rules: "#<hex> #<hex>". Hashes, not
# passwords, go into the ACL file; sha256sum reads the password from a pipe, not from argv.
password_hashes() {
    _rules=""
    while IFS= read -r _pw || [ -n "$_pw" ]; do
        [ -n "$_pw" ] || continue
        _rules="$_rules #$(printf '%s' "$_pw" | sha256sum | cut -c1-64)"
    done <"$1"
    [ -n "$_rules" ] || {
        log "password file $1 holds no password"
        return 1
    }
    printf '%s\n' "${_rules# }"
}

# Writes the ACL file: the template (components/acl.py) with each user's @PASSWORDS@ marker
# replaced by the hashes of the passwords in $AUTH_DIR/<user>-password.
render_acl_file() {
    _template=$1
    _out=$2
    : >"$_out.tmp"
    while IFS= read -r _line || [ -n "$_line" ]; do
        case "$_line" in
            *@PASSWORDS@*)
                _user=$(printf '%s\n' "$_line" | awk '{print $2}')
                _hashes=$(password_hashes "$AUTH_DIR/$_user-password") || return 1
                printf '%s\n' "$_line" | sed "s/@PASSWORDS@/$_hashes/" >>"$_out.tmp"
                ;;
            *) printf '%s\n' "$_line" >>"$_out.tmp" ;;
        esac
    done <"$_template"
    mv "$_out.tmp" "$_out"
}

# Prints "host port" of the master named by a majority of the Sentinels in SENTINEL_ADDRS (less
# the address given as $1, a Sentinel asking its peers). One stale Sentinel (just restarted, or
# cut off) must not decide alone, so fewer agreeing answers count as no answer: returns 1.
ask_sentinels_for_master() {
    _skip=${1:-}
    _answers=""
    _asked=0
    for _addr in $SENTINEL_ADDRS; do
        [ "$_addr" = "$_skip" ] && continue
        _asked=$((_asked + 1))
        _reply=$(sentinel_at "$_addr" SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null) || continue
        _host=$(printf '%s\n' "$_reply" | sed -n 1p)
        _port=$(printf '%s\n' "$_reply" | sed -n 2p)
        case "$_port" in
            '' | *[!0-9]*) continue ;;
        esac
        [ -n "$_host" ] || continue
        _answers="$_answers$_host $_port
"
    done
    [ -n "$_answers" ] || return 1
    _top=$(printf '%s' "$_answers" | sort | uniq -c | sort -rn | sed -n 1p)
    _votes=$(printf '%s\n' "$_top" | awk '{print $1}')
    [ "$_votes" -gt $((_asked / 2)) ] || return 1
    printf '%s\n' "$_top" | sed 's/^ *[0-9]* //'
}

# Prints "host port" of a data node (other than $1, host:port) that reports ROLE master, preferring
# one with replicas attached. Used when the Sentinels cannot say: the cluster may well have a
# master already, and starting another one would split it.
find_master_among_pods() {
    _self=${1:-}
    _found=""
    for _addr in $REDIS_ADDRS; do
        [ "$_addr" = "$_self" ] && continue
        _info=$(cli_at "$_addr" INFO replication 2>/dev/null) || continue
        [ "$(printf '%s\n' "$_info" | info_field role)" = master ] || continue
        if [ "$(printf '%s\n' "$_info" | info_field connected_slaves)" != 0 ]; then
            echo "${_addr%:*} ${_addr##*:}"
            return 0
        fi
        [ -n "$_found" ] || _found="${_addr%:*} ${_addr##*:}"
    done
    [ -n "$_found" ] || return 1
    echo "$_found"
}

# Succeeds when a data node other than $1 (host:port, this pod) reports being a replica of $2
# (this pod's announced host): the pods still follow this pod, so it was their master when it went
# down, and starting it as anyone's replica would close a replication loop.
followed_by_pods() {
    for _addr in $REDIS_ADDRS; do
        [ "$_addr" = "${1:-}" ] && continue
        _info=$(cli_at "$_addr" INFO replication 2>/dev/null) || continue
        [ "$(printf '%s\n' "$_info" | info_field role)" = slave ] || continue
        [ "$(printf '%s\n' "$_info" | info_field master_host)" = "$2" ] && return 0
    done
    return 1
}

# Succeeds when any data node other than $1 (host:port) holds keys.
pods_hold_data() {
    for _addr in $REDIS_ADDRS; do
        [ "$_addr" = "${1:-}" ] && continue
        _keys=$(cli_at "$_addr" DBSIZE 2>/dev/null) || continue
        case "$_keys" in
            '' | *[!0-9]*) continue ;;
        esac
        [ "$_keys" -gt 0 ] && return 0
    done
    return 1
}

# Succeeds when the data directory $1 holds an RDB or AOF file with content.
has_local_data() {
    [ -n "$(find "$1" -maxdepth 2 -type f \( -name '*.rdb' -o -name '*.aof' \) -size +0 2>/dev/null | head -n 1)" ]
}

# Succeeds when any answering Sentinel sees the master as down or is failing it over: a pod the
# Sentinels still name as master must not restart as master in the middle of a failover.
master_in_doubt() {
    for _addr in $SENTINEL_ADDRS; do
        _flags=$(sentinel_at "$_addr" SENTINEL MASTER "$MASTER_NAME" 2>/dev/null | sed -n '/^flags$/{n;p;}')
        case "$_flags" in
            *down* | *failover*) return 0 ;;
        esac
    done
    return 1
}

# Value of one field of INFO output given on stdin (INFO lines end in CRLF).
info_field() {
    tr -d '\r' | sed -n "s/^$1:\(.*\)\$/\1/p"
}

# The replica-priority a redis.conf ($1) gives (the server's default, 100, when it gives none):
# what start-redis.sh restores once a replica has synced.
configured_priority() {
    awk '$1 == "replica-priority" { p = $2 } END { print (p == "" ? 100 : p) }' "$1"
}

# Points MASTER_NAME, REDIS_ADDRS and REDIS_SEED_HOST at one entry of SENTINEL_MONITORS
# ("name=host:port,host:port,..."), so the functions above act on that tier.
select_monitor() {
    MASTER_NAME=${1%%=*}
    _pods=${1#*=}
    REDIS_ADDRS=$(printf '%s\n' "$_pods" | tr ',' ' ')
    _seed=${_pods%%,*}
    REDIS_SEED_HOST=${_seed%:*}
}
