"""Finding Redis and Sentinel settings in rendered config files, start scripts and command lines.

The stack's pods do not run a finished ``redis.conf``: their start scripts print the per-pod and
secret lines (``masterauth``, ``tls-port``, ``sentinel auth-pass``) into a copy at start. So a
setting counts wherever it would take effect: first on a config line, at the start of a quoted
string or after a ``\\n`` escape (what ``printf``/``echo`` write into a config file), as a
``--flag`` of a command line, or after ``CONFIG SET``. The same word elsewhere is not a setting:
in prose (``log "masterauth applied on ..."``) or in a grep pattern (``'^sentinel auth-pass '``),
whose ``^`` keeps it off the start of the string.
"""

from __future__ import annotations

import re

# Where a setting can start (see the module docstring). ``CONFIG SET`` may follow a printf
# conversion (``'%sCONFIG SET masterauth %s'``), hence no word boundary before it.
LEAD = r"""(?:^[ \t]*|['"][ \t]*|\\n|--|(?:config[ \t]+set|\becho|\bprintf)[ \t]+)"""
# One word of a setting: a shell quote or backslash ends it (it ends the string it sits in).
WORD = r"""[^\s'"\\]+"""
# Sentinel settings of a monitored master carry a ``sentinel`` prefix (``sentinel auth-pass``).
SENTINEL_PREFIX = r"(?:sentinel[ \t]+)?"


def without_comments(text: str) -> str:
    """Lines that are not comments: a commented-out line is prose, not a setting."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def setting_values(text: str, name: str) -> list[str]:
    """The first word after every ``name`` setting in ``text`` (a placeholder like ``%s`` or
    ``$VAR`` when a script fills the value in at start), in order."""
    pattern = re.compile(rf"""{LEAD}{SENTINEL_PREFIX}{re.escape(name)}[ \t]+["']?({WORD})""", re.I | re.M)
    return [m.group(1) for m in pattern.finditer(text)]


def acl_user_rules(text: str, user: str) -> list[str]:
    """The rules of every ``user <user> ...`` line (an ACL file or a config line), in order."""
    pattern = re.compile(rf"""{LEAD}user[ \t]+{re.escape(user)}(?=[\s'"\\]|$)([^\n'"\\]*)""", re.I | re.M)
    return [m.group(1).strip() for m in pattern.finditer(text)]


def acl_user_enabled(rules: str, enabled: bool) -> bool:
    """Whether a user is on after applying ``rules`` to a user that starts ``enabled``.

    Redis applies ACL rules left to right: ``on`` and ``off`` set the flag, ``reset`` turns the
    user off (among the rest it clears).
    """
    for rule in rules.split():
        word = rule.lower()
        if word == "on":
            enabled = True
        elif word in ("off", "reset"):
            enabled = False
    return enabled
