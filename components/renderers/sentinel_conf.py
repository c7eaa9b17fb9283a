"""The Sentinel config template. It carries no secret and no address.

Sentinel rewrites its own config file, so this template is only the starting point:
``start-sentinel.sh`` copies it to a writable volume, fills in each master it learned from its
peers (``@MASTER_HOST:<name>@``/``@MASTER_PORT:<name>@``), and appends ``auth-pass``, ``myid`` and the
announce address.
"""

from __future__ import annotations

from components.settings import Settings
from components.topology import Topology


def render_sentinel_conf(settings: Settings) -> str:
    """One template monitoring every data tier's master (the cache and the state tier), each under
    its own name with the same quorum and timings."""
    s = settings.sentinel
    monitors = "\n".join(
        f"""# The {tier.tier} tier ({tier.statefulset}).
sentinel monitor {tier.master_name} @MASTER_HOST:{tier.master_name}@ @MASTER_PORT:{tier.master_name}@ {s.quorum}
sentinel down-after-milliseconds {tier.master_name} {s.down_after_milliseconds}
sentinel failover-timeout {tier.master_name} {s.failover_timeout_milliseconds}
sentinel parallel-syncs {tier.master_name} {s.parallel_syncs}
"""
        for tier in Topology.of(settings).tiers
    )
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
sentinel deny-scripts-reconfig yes

{monitors}"""
