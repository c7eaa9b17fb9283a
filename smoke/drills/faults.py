"""Faults: what a drill does to the topology, and how it is healed afterwards.

A fault has ``inject()`` (called once, under load) and ``heal()`` (called after the workloads
stopped: the topology is brought back to its full shape so the next drill starts from it).
Faults act only on processes the rehearsal started (by their PID) or through the Sentinels'
own commands; they never reach beyond the topology they are given.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

from smoke.local.rehearsal import LoopbackCluster, Node
from smoke.strategies.client import ClientConfig, tls_options

# How long heal() waits for a healed rehearsal to converge again (one master, replicas linked,
# every Sentinel agreeing).
CONVERGE_TIMEOUT_S = 90.0


class Fault(Protocol):
    name: str

    def inject(self) -> None: ...

    def heal(self) -> None: ...


class KillMaster:
    """Send ``sig`` (SIGKILL by default) to the rehearsal's current master of one data ``tier``;
    heal restarts it with its data directory, and it must rejoin as a replica."""

    def __init__(self, cluster: LoopbackCluster, sig: signal.Signals = signal.SIGKILL, tier: str = "cache") -> None:
        self.cluster, self.sig, self.tier = cluster, sig, tier
        self.name = f"master {sig.name}" if tier == "cache" else f"{tier} master {sig.name}"
        self.killed: Node | None = None

    def inject(self) -> None:
        self.killed = self.cluster.masters(self.tier)[0]
        self.cluster.kill_node(self.killed, self.sig)

    def restart(self) -> None:
        """Start the killed master again (its pod restarting), without waiting for anything."""
        if self.killed is not None and not self.killed.running:
            self.cluster.start_node(self.killed)

    def heal(self) -> None:
        self.restart()
        self.cluster.wait_for("the killed master back as a replica", self.cluster.converged, CONVERGE_TIMEOUT_S)


class KillReplica:
    """SIGKILL one replica of a data ``tier`` (a pod restart, a node drain). With
    ``restart_after_s`` it is started again that long after the kill, from its data directory, as
    its pod would be: while the drill runs, so the workloads see it come back. Heal: start it if
    it is still down, and wait for the topology to converge."""

    def __init__(self, cluster: LoopbackCluster, tier: str = "cache", restart_after_s: float | None = None) -> None:
        self.cluster, self.tier, self.restart_after_s = cluster, tier, restart_after_s
        back = "" if restart_after_s is None else f", back after {restart_after_s:g} s"
        self.name = f"{tier} replica SIGKILL{back}"
        self.killed: Node | None = None
        self._restart: threading.Timer | None = None
        self._lock = threading.Lock()

    def inject(self) -> None:
        self.killed = next(
            n for n in self.cluster.tier_nodes(self.tier) if n.running and self.cluster.role(n) == "slave"
        )
        self.cluster.kill_node(self.killed, signal.SIGKILL)
        if self.restart_after_s is not None:
            self._restart = threading.Timer(self.restart_after_s, self._start)
            self._restart.daemon = True
            self._restart.start()

    def _start(self) -> None:
        with self._lock:
            if self.killed is not None and not self.killed.running:
                self.cluster.start_node(self.killed)

    def restart(self) -> None:
        """Start the killed replica now if its timer has not (cancelling the timer)."""
        if self._restart is not None:
            self._restart.cancel()
            self._restart.join(timeout=30)
        self._start()

    def heal(self) -> None:
        self.restart()
        self.cluster.wait_for("the killed replica back", self.cluster.converged, CONVERGE_TIMEOUT_S)


class HangSentinel:
    """SIGSTOP one Sentinel (by default the first a client asks): it still accepts connections
    but never answers, the worst a peer can do to discovery. Heal: SIGCONT."""

    def __init__(self, cluster: LoopbackCluster, index: int = 0) -> None:
        self.cluster, self.index = cluster, index
        self.name = f"Sentinel {index} hung (SIGSTOP)"

    def inject(self) -> None:
        self.cluster.pause_node(self.cluster.sentinels[self.index])

    def heal(self) -> None:
        self.cluster.resume_node(self.cluster.sentinels[self.index])


class Together:
    """Several faults at once: injected in order, ``gap_s`` apart (0: at once; e.g. a replica
    down for a while before the master fails), and healed in the same order, so a fault whose
    heal the others' heal waits on comes first (a hung Sentinel before a killed master: the
    master's heal waits for every Sentinel to agree). Before any heal, every fault that has a
    ``restart()`` (start what it killed, wait for nothing) is restarted, so no heal waits for a
    topology another fault still holds down. Each heal runs even when an earlier one failed; the
    first failure is raised afterwards."""

    def __init__(self, *faults: Fault, gap_s: float = 0.0) -> None:
        self.faults, self.gap_s = faults, gap_s
        self.name = (" + " if not gap_s else f", {gap_s:g} s later ").join(f.name for f in faults)

    def inject(self) -> None:
        for index, fault in enumerate(self.faults):
            if index and self.gap_s:
                time.sleep(self.gap_s)
            fault.inject()

    def heal(self) -> None:
        failure: BaseException | None = None
        for fault in self.faults:
            restart = getattr(fault, "restart", None)
            if restart is not None:
                try:
                    restart()
                except Exception as exc:  # every fault gets healed; the first error is raised afterwards
                    failure = failure or exc
        for fault in self.faults:
            try:
                fault.heal()
            except Exception as exc:  # every fault gets healed; the first error is raised afterwards
                failure = failure or exc
        if failure is not None:
            raise failure


class SentinelFailover:
    """``SENTINEL FAILOVER`` through the first Sentinel that accepts it: the fault a deployed
    cluster allows (the old master keeps answering until it is demoted). Nothing to heal."""

    name = "SENTINEL FAILOVER"

    def __init__(self, config: ClientConfig) -> None:
        self.config = config

    def inject(self) -> None:
        for host, port in self.config.sentinels:
            with redis.Redis(
                host=host,
                port=port,
                password=self.config.sentinel_password,
                socket_timeout=2,
                **tls_options(self.config),  # type: ignore[arg-type]
            ) as sentinel:
                try:
                    sentinel.execute_command("SENTINEL FAILOVER", self.config.master_name)
                    return
                except redis.RedisError:
                    continue
        raise RuntimeError("no Sentinel accepted SENTINEL FAILOVER")

    def heal(self) -> None:
        """Sentinel demotes the old master itself."""


class FullClusterLoss:
    """Every process killed and every data directory deleted: both data tiers and the Sentinels.

    ``last_act`` runs just before the loss (the backup drill takes its backup there: the loss
    comes after the last backup); ``recovery`` is the procedure under test (the backup drill's
    restore). ``destroyed`` names the pods whose data is gone."""

    name = "full cluster loss"

    def __init__(self, cluster: LoopbackCluster, last_act: Callable[[], None], recovery: Callable[[], None]) -> None:
        self.cluster, self.last_act, self.recovery = cluster, last_act, recovery
        self.destroyed: list[str] = []

    def inject(self) -> None:
        self.last_act()
        for node in [*self.cluster.sentinels, *self.cluster.data_nodes]:
            self.cluster.kill_node(node, signal.SIGKILL)
        for node in [*self.cluster.data_nodes, *self.cluster.sentinels]:
            self.cluster.wipe_data(node)
            self.destroyed.append(node.name)

    def heal(self) -> None:
        self.recovery()
