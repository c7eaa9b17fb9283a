"""Redis ACL users, one per role: who may run which commands on which keys.

Every user, its rights and the Secret key holding its password are defined here, once. The pure
:func:`render_acl_template` turns them into ``users.acl`` for the Redis ConfigMap: the users'
rules with a ``@PASSWORDS@`` marker where the password hashes go, and no secret. At pod start
``start-redis.sh`` replaces each marker with ``#<sha256>`` of every password in that user's
mounted Secret file (one password per line: a rotation lists two) and points ``aclfile`` at the
result, on a memory volume.

The application user's key patterns come from the strategies' own ``KEY_PREFIX`` constants plus
the smoke suite's prefix, so a new strategy cannot drift from its ACL. Its commands are those the
strategies send and those their Lua scripts call (ACLs apply inside scripts too), measured with
``INFO commandstats`` on the rehearsal after a full smoke run.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from smoke.checks import SMOKE_KEY_PREFIX
from smoke.strategies import claims, entries, idempotency, ratelimit, workflow

# Long and alphanumeric: the start scripts write the Sentinel and replication passwords unquoted
# into the Sentinel and Redis configs. Here, not in components/auth.py, so the rotation tool
# (smoke/rotation.py) draws from the same alphabet without importing the Pulumi resources.
GENERATED_PASSWORD_LENGTH = 40
# What ``RandomPassword(special=False)`` draws from; the rotation (smoke/rotation.py) uses the same.
GENERATED_PASSWORD_ALPHABET = string.ascii_letters + string.digits

# Where the start script puts each user's password hashes.
PASSWORDS_MARKER = "@PASSWORDS@"
# The Sentinels' own password (``requirepass``): what clients, probes and peers send to a Sentinel.
SENTINEL_PASSWORD_KEY = "sentinel-requirepass"

# Key prefixes the application owns on each data tier (components/topology.py): the cache holds
# entries and claims, the state tier the decisions (workflows, idempotency records, rate-limit
# counters, the entries' version markers and epoch); the smoke suite's runs write on both. On a
# tier, the application user may touch only that tier's prefixes, so a decision cannot land on
# the evicting cache by mistake (``dict:entry:*`` does not match the markers' ``dict:entry-ver:``).
TIER_KEY_PREFIXES = {
    "cache": (entries.KEY_PREFIX, claims.KEY_PREFIX, SMOKE_KEY_PREFIX),
    "state": (
        workflow.KEY_PREFIX,
        idempotency.KEY_PREFIX,
        ratelimit.KEY_PREFIX,
        entries.MARKER_PREFIX,
        SMOKE_KEY_PREFIX,
    ),
}
# Every prefix the application owns (on one tier or the other).
APPLICATION_KEY_PREFIXES = tuple(dict.fromkeys(p for prefixes in TIER_KEY_PREFIXES.values() for p in prefixes))

# Commands of the application user, grouped by why they are needed.
_APPLICATION_COMMANDS = (
    # connection set-up by redis-py and the Sentinel client (ROLE confirms the master). Not
    # CLIENT SETINFO: Redis 7.0 lacks it, and redis-py ignores its refusal on 7.2.
    "ping", "echo", "hello", "client|setname", "role",
    # the strategies: Lua (one atomic step per operation), WAIT for confirmed writes, MULTI
    "evalsha", "eval", "script|load", "wait", "multi", "exec", "discard",
    # data commands of the strategies and of the commands their Lua scripts call
    "get", "set", "mget", "del", "unlink", "exists", "type", "incr", "incrby",
    "expire", "pexpire", "persist", "ttl", "pttl", "pexpiretime", "time",
    "hset", "hget", "zadd", "zcard", "zrange", "zrangebyscore", "zrem", "zremrangebyscore",
    # smoke checks: replication state, planting foreign values, cleaning up a run's keys
    "info", "rpush", "sadd", "scan",
)  # fmt: skip


@dataclass(frozen=True)
class AclUser:
    """One Redis user: its name, what it is for, and its rules (without ``on`` or passwords)."""

    name: str
    purpose: str
    commands: tuple[str, ...]
    keys: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    # Free-form extra rules, e.g. key read-only access ``%R~*``.
    extra: tuple[str, ...] = ()

    @property
    def secret_key(self) -> str:
        """The key of this user's password in the stack Secret (and its file name in the pod)."""
        return f"{self.name}-password"

    def rules(self) -> str:
        """The rules after ``reset`` (which leaves no command, key or channel allowed)."""
        parts = [f"+{c}" for c in self.commands]
        parts += [f"~{k}" for k in self.keys] + [f"&{c}" for c in self.channels] + list(self.extra)
        return " ".join(parts)


APPLICATION = AclUser(
    "app",
    "the application and the smoke suite: the five strategies' keys, their commands only",
    _APPLICATION_COMMANDS,
    # The empty pattern admits only the empty key name: the entry strategy's Lua gets "" in a
    # KEYS slot it does not use (e.g. no pointer key), and ACLs check every KEYS argument.
    keys=(*(f"{p}*" for p in APPLICATION_KEY_PREFIXES), ""),
)
REPLICATION = AclUser("replication", "replicas syncing from the master (masteruser)", ("psync", "replconf", "ping"))
SENTINEL = AclUser(
    "sentinel",
    "the Sentinels watching and reconfiguring the data nodes (the set the Redis Sentinel docs list)",
    (
        "multi", "exec", "slaveof", "ping", "subscribe", "publish", "info", "role",
        "config|rewrite", "client|setname", "client|kill", "script|kill",
    ),
    channels=("__sentinel__:hello",),
)  # fmt: skip
EXPORTER = AclUser(
    "exporter",
    "redis_exporter sidecars: server statistics, read-only, no key access",
    (
        # Not CONFIG GET: it returns masterauth, the replication user's password (the sidecars run
        # with -config-command=- instead).
        "ping", "info", "slowlog", "latency", "client|list", "client|info", "client|setname",
        "select", "hello", "role",
    ),
)
BACKUP = AclUser(
    "backup",
    "the backup job's `redis-cli --rdb` (a replication stream of the snapshot, nothing else)",
    ("sync", "replconf", "ping", "info", "role"),
)
PROBE = AclUser(
    "probe",
    "probes, the start scripts and the preStop hook: health, role, data presence, write pause",
    ("ping", "info", "role", "dbsize", "client|pause", "client|unpause"),
)
ADMIN = AclUser(
    "admin",
    "operators and the password rotation (ACL SETUSER); every command, every key",
    ("@all",),
    keys=("*",),
    channels=("*",),
)

USERS: tuple[AclUser, ...] = (APPLICATION, REPLICATION, SENTINEL, EXPORTER, BACKUP, PROBE, ADMIN)
# The built-in user every unauthenticated connection gets: off, so AUTH with only a password fails.
DEFAULT_USER_LINE = "user default off resetpass resetkeys resetchannels -@all"


def user(name: str) -> AclUser:
    for candidate in USERS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no ACL user {name!r}; users: {', '.join(u.name for u in USERS)}")


def secret_keys() -> list[str]:
    """Every key of the stack Secret: one password per ACL user, and the Sentinels' password."""
    return [u.secret_key for u in USERS] + [SENTINEL_PASSWORD_KEY]


def application_user(tier: str) -> AclUser:
    """The application user as one data tier's ACL has it: that tier's key prefixes only."""
    if tier not in TIER_KEY_PREFIXES:
        raise ValueError(f"tier {tier!r}: must be one of {', '.join(TIER_KEY_PREFIXES)}")
    keys = (*(f"{p}*" for p in TIER_KEY_PREFIXES[tier]), "")
    return AclUser(APPLICATION.name, APPLICATION.purpose, APPLICATION.commands, keys=keys)


def render_acl_template(users: tuple[AclUser, ...] = USERS, tier: str = "cache") -> str:
    """``users.acl`` of one data tier with a password marker per user (the application user
    confined to the tier's prefixes); ``start-redis.sh`` fills in the hashes."""
    tiered = tuple(application_user(tier) if u.name == APPLICATION.name else u for u in users)
    lines = [DEFAULT_USER_LINE]
    lines += [f"user {u.name} reset on {PASSWORDS_MARKER} {u.rules()}" for u in tiered]
    return "\n".join(lines) + "\n"
