"""The Sentinel config template. It carries no secret and no address.

Sentinel rewrites its own config file, so this template is only the starting point:
``start-sentinel.sh`` copies it to a writable volume, fills in the master it learned from its
peers (``@MASTER_HOST@``/``@MASTER_PORT@``), and appends ``auth-pass``, ``myid`` and the
announce address.
"""

from __future__ import annotations

from components.settings import Settings


def render_sentinel_conf(settings: Settings) -> str:
    s = settings.sentinel
    name = settings.master_name
    return f"""\
# sentinel.conf template for stack {settings.stack} (rendered by components/renderers/sentinel_conf.py).
# start-sentinel.sh writes the live copy: bind, port, dir, announce-ip/port, myid, auth-pass.

# Access to Sentinel is limited by the NetworkPolicy; protected mode would also refuse the
# other Sentinels, which do not connect from loopback.
protected-mode no
daemonize no
logfile ""

# Pods are addressed by their stable DNS names, never by IPs that change on restart.
sentinel resolve-hostnames yes
sentinel announce-hostnames yes

sentinel monitor {name} @MASTER_HOST@ @MASTER_PORT@ {s.quorum}
sentinel down-after-milliseconds {name} {s.down_after_milliseconds}
sentinel failover-timeout {name} {s.failover_timeout_milliseconds}
sentinel parallel-syncs {name} {s.parallel_syncs}
sentinel deny-scripts-reconfig yes
"""
