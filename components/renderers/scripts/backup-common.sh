# backup-common.sh: sourced by backup.sh and restore.sh (after common.sh). POSIX sh; it runs under
# BusyBox ash in the Redis image and under bash in the AWS CLI image, so it uses nothing else.
#
# Where backups live. The defaults are the stack's; the local drill points S3_ENDPOINT_URL at
# moto on loopback. AWS credentials never come from here: in the pod they are the service
# account's web identity (IRSA: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE injected by EKS).

: "${BACKUP_BUCKET:=@@BACKUP_BUCKET@@}"
: "${BACKUP_PREFIX:=@@BACKUP_PREFIX@@}"
# Object layout: one prefix per data tier, BACKUP_PREFIX/<tier>/YYYY/MM/DD/<time>-<source>.rdb
# (cache: the LRU cache; state: the decisions, what a full-loss restore brings back first). Cache
# backups from before the tier split sit directly under BACKUP_PREFIX/YYYY/ until they expire;
# restore.sh still finds them for the cache tier.
BACKUP_TIERS="cache state"
: "${AWS_REGION:=@@BACKUP_REGION@@}"
# Scratch directory shared by the dump and upload containers (an emptyDir in the pod).
: "${BACKUP_DIR:=@@BACKUP_DIR@@}"
: "${S3_ENDPOINT_URL:=}"
AWS_DEFAULT_REGION=$AWS_REGION
# AWS CLI v2 pipes output through a pager unless told not to.
AWS_PAGER=""
export AWS_REGION AWS_DEFAULT_REGION AWS_PAGER

# Logs the reason and ends the script with a non-zero exit: every failure path ends here.
fail() {
    log "FAILED: $*"
    exit 1
}

# `aws s3api` against the bucket's region, or the endpoint given in S3_ENDPOINT_URL.
s3api() {
    if [ -n "$S3_ENDPOINT_URL" ]; then
        aws --endpoint-url "$S3_ENDPOINT_URL" s3api "$@"
    else
        aws s3api "$@"
    fi
}

sha256_hex() {
    sha256sum "$1" | cut -d ' ' -f 1
}

# The base64 of the binary digest, the form S3's x-amz-checksum-sha256 takes. Hex pairs become
# octal escapes for printf: neither image is guaranteed xxd or openssl.
hex_to_base64() {
    _hex=$1
    _escapes=""
    while [ -n "$_hex" ]; do
        _pair=${_hex%"${_hex#??}"}
        _hex=${_hex#??}
        _escapes="$_escapes$(printf '\\%03o' "$((0x$_pair))")"
    done
    # shellcheck disable=SC2059 # the escapes are the format on purpose
    printf "$_escapes" | base64
}

# Value of key $1 in the key=value metadata file $2.
meta_field() {
    sed -n "s/^$1=//p" "$2" | head -n 1
}

# Runs redis-check-rdb on $1; on failure prints its diagnosis (the lines after the error banner).
check_rdb() {
    if ! _report=$("$CHECK_RDB_BIN" "$1" 2>&1); then
        printf '%s\n' "$_report" | sed -n '/RDB ERROR DETECTED/,$p' | grep -v '^\[info\]' | head -n 5 | tr '\n' ' '
        return 1
    fi
    printf '%s\n' "$_report"
}

# Fails unless $1 is a data tier; $2 says where the name came from (for the message).
check_tier() {
    case " $BACKUP_TIERS " in
        *" $1 "*) [ -n "$1" ] && return 0 ;;
    esac
    fail "$2 '$1': must be one of: $BACKUP_TIERS"
}

# The Sentinel master name of tier $1: its entry in SENTINEL_MONITORS (one per tier, in the order
# of BACKUP_TIERS, as components/renderers/scripts.py renders them). Empty when there is none.
tier_master_name() {
    _n=0
    for _t in $BACKUP_TIERS; do
        _n=$((_n + 1))
        [ "$_t" = "$1" ] && break
    done
    # shellcheck disable=SC2086 # one entry per word
    _entry=$(printf '%s\n' $SENTINEL_MONITORS | sed -n "${_n}p")
    printf '%s\n' "${_entry%%=*}"
}

# The key prefix of tier $1's backups (without the trailing '/').
tier_prefix() {
    printf '%s/%s\n' "$BACKUP_PREFIX" "$1"
}

# Succeeds when object key $2 is a backup of tier $1: under its prefix, or (cache only) a backup
# from before the tier split, directly under BACKUP_PREFIX/YYYY/.
key_of_tier() {
    case "$2" in
        "$BACKUP_PREFIX/$1/"*.rdb) return 0 ;;
    esac
    [ "$1" = cache ] || return 1
    case "$2" in
        "$BACKUP_PREFIX/"*) ;;
        *) return 1 ;;
    esac
    printf '%s\n' "${2#"$BACKUP_PREFIX/"}" | grep -q '^[0-9][0-9][0-9][0-9]/.*\.rdb$'
}
