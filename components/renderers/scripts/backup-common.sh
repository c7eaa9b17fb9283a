# backup-common.sh: sourced by backup.sh and restore.sh (after common.sh). POSIX sh; it runs under
# BusyBox ash in the Redis image and under bash in the AWS CLI image, so it uses nothing else.
#
# Where backups live. The defaults are the stack's; the local drill points S3_ENDPOINT_URL at
# moto on loopback. AWS credentials never come from here: in the pod they are the service
# account's web identity (IRSA: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE injected by EKS).

: "${BACKUP_BUCKET:=@@BACKUP_BUCKET@@}"
: "${BACKUP_PREFIX:=@@BACKUP_PREFIX@@}"
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
