"""The server lines this project proves, and how to tell which one an image runs.

One place for the fact "which Redis servers the tests here run". Two lines are rehearsed, each
from Debian's packages (``make deps`` installs both):

- **valkey 8.0** (``valkey-server``/``valkey-sentinel``/``valkey-cli``, bookworm-backports):
  the fork of Redis 7.2.4 that keeps its semantics, the 7.2 line production runs. It is the
  default image's line: the seed's ``redis:7.2.4`` cannot be rehearsed here (no Debian package of
  Redis 7.2 exists), and Redis 7.2 behaves differently from 7.0 where it matters most (``WAIT``
  waits for the calling client's own last write; see ``smoke/strategies/idempotency.py``).
- **redis 7.0** (``redis-server``/... from bookworm): the previous line, kept so a stack that pins
  a Redis 7.0 image is still proven.

The rehearsal starts a line's binaries from the same rendered scripts (``SERVER_LINE`` picks
the names in ``common.sh``; in a pod the image's own tools are found). The policy pack reports an
image whose line and minor version is not one of these (``policies/server_line.py``, whose
default a test keeps equal to this table); the tests check the proven minor against the
installed binaries, so the table cannot drift from what is rehearsed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLine:
    """One server line: its tools' name prefix, the image repositories that ship it, and the
    minor version the rehearsal runs."""

    name: str  # "valkey" or "redis": also the tools' prefix (valkey-server, redis-cli, ...)
    repositories: tuple[str, ...]  # upstream image repositories (no registry host, no "library/")
    proven_minor: str  # "8.0": the minor version of the Debian package the tests run

    def tool(self, tool: str) -> str:
        """The binary of one tool on this line: ``tool("server")`` is ``valkey-server``."""
        return f"{self.name}-{tool}"

    @property
    def binaries(self) -> tuple[str, ...]:
        """What the rehearsal needs of this line."""
        return tuple(self.tool(t) for t in ("server", "sentinel", "cli", "check-rdb"))


VALKEY = ServerLine("valkey", ("valkey/valkey",), "8.0")
REDIS = ServerLine("redis", ("redis",), "7.0")  # Docker Hub's library/redis
LINES: dict[str, ServerLine] = {line.name: line for line in (VALKEY, REDIS)}
DEFAULT_LINE = VALKEY
# The default image: the exact version of the default line that the rehearsal runs (Debian's
# valkey 8.0.1), in the upstream image's Alpine variant.
DEFAULT_IMAGE = "valkey/valkey:8.0.1-alpine"
