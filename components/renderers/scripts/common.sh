# common.sh: sourced by every script of the cache layer (POSIX sh; the image's shell is BusyBox ash).
#
# Every address, port, path and credential comes from the environment. The defaults below are the
# Kubernetes ones, filled in by components/renderers/scripts.py from the stack settings; the local
# rehearsal overrides them to run the very same scripts on loopback addresses.

: "${MASTER_NAME:=@@MASTER_NAME@@}"
: "${REDIS_PORT:=@@REDIS_PORT@@}"
: "${SENTINEL_PORT:=@@SENTINEL_PORT@@}"
# Every Sentinel pod as host:port (stable DNS names), asked in turn for the current master.
: "${SENTINEL_ADDRS:=@@SENTINEL_ADDRS@@}"
# Ordinal 0: the master of a cluster that no Sentinel knows yet.
: "${REDIS_SEED_HOST:=@@REDIS_SEED_HOST@@}"
: "${REDIS_PASSWORD_FILE:=@@PASSWORD_FILE@@}"
# Seconds one redis-cli call may take before it is abandoned.
: "${CLI_TIMEOUT:=3}"

log() {
    printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${0##*/}" "$*" >&2
}

# Reads the password into REDISCLI_AUTH, which redis-cli uses without putting it on its command
# line. `read` is a shell builtin, so the password never shows up in any process's argv either.
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

# redis-cli against one Sentinel given as host:port. Sentinels have no password of their own, so
# the data nodes' password is not sent to them.
sentinel_cli() {
    _addr=$1
    shift
    (unset REDISCLI_AUTH; timeout "$CLI_TIMEOUT" redis-cli -h "${_addr%:*}" -p "${_addr##*:}" "$@")
}

# Prints "host port" of the master named by most of the Sentinels that answer, skipping the
# address given as $1 (a Sentinel asking its peers). Returns 1 when no Sentinel knows a master.
ask_sentinels_for_master() {
    _skip=${1:-}
    _answers=""
    for _addr in $SENTINEL_ADDRS; do
        [ "$_addr" = "$_skip" ] && continue
        _reply=$(sentinel_cli "$_addr" SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null) || continue
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
    printf '%s' "$_answers" | sort | uniq -c | sort -rn | sed -n '1s/^ *[0-9]* //p'
}

# Succeeds when any answering Sentinel sees the master as down or is failing it over: a pod the
# Sentinels still name as master must not restart as master in the middle of a failover.
master_in_doubt() {
    for _addr in $SENTINEL_ADDRS; do
        _flags=$(sentinel_cli "$_addr" SENTINEL MASTER "$MASTER_NAME" 2>/dev/null | sed -n '/^flags$/{n;p;}')
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
