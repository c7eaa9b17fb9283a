#!/bin/sh
# sync-acl.sh [--check]: make this data node's live ACL users match the mounted Secret.
#
# Used by the password rotation (docs/runbooks/password-rotation.md), in every Redis pod:
#   kubectl exec redis-N -c redis -- sh /etc/redis/sync-acl.sh
# For every user of the ACL template it sets exactly the passwords listed in the user's Secret
# file (ACL SETUSER <user> resetpass #<sha256>...: connections already authenticated stay up;
# ACL LOAD would disconnect them), rewrites the ACL file a restart would load, and sets masterauth
# to the replication user's first password. It prints one line per user, "<user> <fingerprint>",
# a digest of the hashes it applied, so the operator can see every pod read the same Secret
# (kubelet updates mounted Secrets after a delay). --check prints the lines and changes nothing.
# Commands go to redis-cli on stdin: no password or hash on any command line.
set -eu
. "$(dirname "$0")/common.sh"

: "${REDIS_HOST:=127.0.0.1}"
: "${REDIS_RUN_DIR:=@@RUN_DIR@@}"
: "${REDIS_ACL_TEMPLATE:=@@REDIS_CONFIG_DIR@@/users.acl}"
: "${REPLICATION_USER:=@@REPLICATION_USER@@}"
REDIS_USER=${SYNC_USER:-@@ADMIN_USER@@}
REDIS_PASSWORD_FILE=$AUTH_DIR/$REDIS_USER-password
check=${1:-}

commands=""
for user in $(sed -n 's/^user \([^ ]*\) .*@PASSWORDS@.*/\1/p' "$REDIS_ACL_TEMPLATE"); do
    hashes=$(password_hashes "$AUTH_DIR/$user-password")
    printf '%s %s\n' "$user" "$(printf '%s' "$hashes" | sha256sum | cut -c1-12)"
    commands="${commands}ACL SETUSER $user resetpass $hashes
"
done
[ "$check" = --check ] && exit 0

# The admin may authenticate with any of its listed passwords: the first is tried, and during a
# rotation the live node may know only the old one yet, so each is tried in turn.
applied=""
while IFS= read -r REDIS_AUTH || [ -n "$REDIS_AUTH" ]; do
    [ -n "$REDIS_AUTH" ] || continue
    replication_auth=$(first_password "$AUTH_DIR/$REPLICATION_USER-password")
    if reply=$(printf '%sCONFIG SET masterauth %s\n' "$commands" "$replication_auth" |
        redis_cli -h "$REDIS_HOST" -p "$REDIS_PORT" 2>&1); then
        case "$reply" in
            *NOAUTH* | *WRONGPASS* | *"invalid username-password"*) continue ;;
        esac
        applied=yes
        break
    fi
done <"$REDIS_PASSWORD_FILE"
if [ -z "$applied" ]; then
    log "no password in $REDIS_PASSWORD_FILE was accepted for $REDIS_USER"
    exit 1
fi
if printf '%s\n' "$reply" | grep -v '^OK$' | grep -q .; then
    log "a command was refused: $(printf '%s' "$reply" | grep -v '^OK$' | head -n 1)"
    exit 1
fi
mkdir -p "$REDIS_RUN_DIR"
umask 077
render_acl_file "$REDIS_ACL_TEMPLATE" "$REDIS_RUN_DIR/users.acl"
log "ACL passwords and masterauth applied on $REDIS_HOST:$REDIS_PORT"
