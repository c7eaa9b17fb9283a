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
: "${REDIS_PASSWORD_FILE:=@@PASSWORD_FILE@@}"
# Seconds one redis-cli call may take before it is abandoned.
: "${CLI_TIMEOUT:=3}"

log() {
    printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${0##*/}" "$*" >&2
}

# Reads the password into REDISCLI_AUTH, which redis-cli uses without putting it on its command
# line. `read` is a shell builtin, so the password never shows up in any process's argv either.
# Data nodes and Sentinels share this password.
load_password() {
    if [ ! -r "$REDIS_PASSWORD_FILE" ]; then
        log "password file $REDIS_PASSWORD_FILE is missing or unreadable"
        exit 1
    fi
    REDISCLI_AUTH=""
    IFS= read -r REDISCLI_AUTH <"$REDIS_PASSWORD_FILE" || [ -n "$REDISCLI_AUTH" ]
    if [ -z "$REDISCLI_AUTH" ]; then
        log "password file $REDIS_PASSWORD_FILE is empty"
        exit 1
    fi
    export REDISCLI_AUTH
}

# redis-cli against a data node, authenticated through REDISCLI_AUTH.
redis_cli() {
    timeout "$CLI_TIMEOUT" redis-cli --no-auth-warning "$@"
}

# redis-cli against one Sentinel or data node given as host:port.
cli_at() {
    _addr=$1
    shift
    redis_cli -h "${_addr%:*}" -p "${_addr##*:}" "$@"
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
        _reply=$(cli_at "$_addr" SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null) || continue
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
        _flags=$(cli_at "$_addr" SENTINEL MASTER "$MASTER_NAME" 2>/dev/null | sed -n '/^flags$/{n;p;}')
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
