"""Faults: what a drill does to the topology, and how it is healed afterwards.

A fault has ``inject()`` (called once, under load) and ``heal()`` (called after the workloads
stopped: the topology is brought back to its full shape so the next drill starts from it).
Faults act only on processes the rehearsal started (by their PID), through the Sentinels' own
commands, or (:class:`Partition`) through iptables rules on the loopback interface in a chain of
their own that they remove again; they never reach beyond the topology they are given.

A fault that stops acting by itself while the drill runs (a hang that ends, a partition that is
lifted, a process started again by a timer) sets ``ended_at`` (``time.monotonic()``) when it does,
so the reconvergence checker can time the topology's return from there.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
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


class _Timer:
    """One action ``delay_s`` after ``start()`` on a daemon thread (a pod the kubelet restarts, a
    hang that ends); ``fire_now()`` cancels the wait and runs it at once if it has not run. The
    action runs once at most; ``ended_at`` is when it ran."""

    def __init__(self, delay_s: float | None, action: Callable[[], None]) -> None:
        self.delay_s, self.action = delay_s, action
        self.ended_at: float | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._done = False

    def start(self) -> None:
        """Arm the action (again: a fault may be injected once per drill)."""
        with self._lock:
            self._done, self.ended_at = False, None
        if self.delay_s is not None:
            self._timer = threading.Timer(self.delay_s, self._run)
            self._timer.daemon = True
            self._timer.start()

    def _run(self) -> None:
        with self._lock:
            if not self._done:
                self._done = True
                self.action()
                self.ended_at = time.monotonic()

    def fire_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join(timeout=30)
        self._run()


class _KillNodes:
    """What the kill faults share: ``inject()`` sends ``sig`` to the nodes :meth:`_choose` picks
    (by PID); with ``restart_after_s`` they are started again that long after, from their data
    directories (their pods restarting), while the drill runs, so the workloads see them come
    back. ``restart()`` starts them now if the timer has not (waiting for nothing); heal starts
    any still down and waits for the topology to converge."""

    what = "nodes"  # for the heal's wait message

    def __init__(self, cluster: LoopbackCluster, restart_after_s: float | None, sig: signal.Signals) -> None:
        self.cluster, self.sig = cluster, sig
        self.killed: list[Node] = []
        self._restart = _Timer(restart_after_s, self._start)

    @staticmethod
    def _back(restart_after_s: float | None) -> str:
        return "" if restart_after_s is None else f", back after {restart_after_s:g} s"

    @property
    def ended_at(self) -> float | None:
        return self._restart.ended_at

    def _choose(self) -> list[Node]:
        raise NotImplementedError

    def inject(self) -> None:
        self.killed = self._choose()
        for node in self.killed:
            self.cluster.kill_node(node, self.sig)
        self._restart.start()

    def _start(self) -> None:
        for node in self.killed:
            if not node.running:
                self.cluster.start_node(node)

    def restart(self) -> None:
        self._restart.fire_now()

    def heal(self) -> None:
        self.restart()
        self.cluster.wait_for(f"the killed {self.what} back", self.cluster.converged, CONVERGE_TIMEOUT_S)


class KillMaster(_KillNodes):
    """Send ``sig`` (SIGKILL by default) to the rehearsal's current master of one data ``tier``;
    heal restarts it with its data directory, and it must rejoin as a replica. With
    ``restart_after_s`` its pod comes back that long after the kill, while the drill runs (the
    kubelet restarting a crashed container at once: the old master back before or during the
    failover)."""

    what = "master (as a replica)"

    def __init__(
        self,
        cluster: LoopbackCluster,
        sig: signal.Signals = signal.SIGKILL,
        tier: str = "cache",
        restart_after_s: float | None = None,
    ) -> None:
        super().__init__(cluster, restart_after_s, sig)
        self.tier = tier
        self.name = (f"master {sig.name}" if tier == "cache" else f"{tier} master {sig.name}") + self._back(
            restart_after_s
        )

    def _choose(self) -> list[Node]:
        return [self.cluster.masters(self.tier)[0]]


class KillReplica(_KillNodes):
    """SIGKILL ``count`` replicas of a data ``tier`` (a pod restart, a node drain), back after
    ``restart_after_s`` when given."""

    what = "replicas"

    def __init__(
        self, cluster: LoopbackCluster, tier: str = "cache", restart_after_s: float | None = None, count: int = 1
    ) -> None:
        if count < 1:
            raise ValueError(f"count = {count}: kill at least 1 replica")
        super().__init__(cluster, restart_after_s, signal.SIGKILL)
        self.tier, self.count = tier, count
        what = "replica" if count == 1 else f"{count} replicas"
        self.name = f"{tier} {what} SIGKILL{self._back(restart_after_s)}"

    def _choose(self) -> list[Node]:
        replicas = [n for n in self.cluster.tier_nodes(self.tier) if n.running and self.cluster.role(n) == "slave"]
        if len(replicas) < self.count:
            raise RuntimeError(f"{self.tier} tier: {len(replicas)} replicas running, cannot kill {self.count}")
        return replicas[: self.count]


class StartAgain:
    """A step for :class:`Together`: start what a kill fault killed, now (its pods back at a
    chosen moment rather than on its own timer). Healing is the kill fault's."""

    def __init__(self, killed: _KillNodes) -> None:
        self.killed = killed
        self.name = f"{killed.what} started again"

    def inject(self) -> None:
        self.killed.restart()

    def heal(self) -> None:
        pass


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


class KillSentinels(_KillNodes):
    """SIGKILL ``count`` Sentinels (by PID, the last ones first: the client's first Sentinel
    stays, unless all go), back after ``restart_after_s`` when given, with their data directories
    (their identity and state)."""

    what = "Sentinels"

    def __init__(self, cluster: LoopbackCluster, count: int = 1, restart_after_s: float | None = None) -> None:
        if not 1 <= count <= len(cluster.sentinels):
            raise ValueError(f"count = {count}: kill between 1 and {len(cluster.sentinels)} Sentinels")
        super().__init__(cluster, restart_after_s, signal.SIGKILL)
        self.count = count
        self.name = f"{count} of {len(cluster.sentinels)} Sentinels SIGKILL{self._back(restart_after_s)}"

    def _choose(self) -> list[Node]:
        return self.cluster.sentinels[::-1][: self.count]


class _HangNode:
    """What the hang faults share: SIGSTOP the node :meth:`_choose` picks for ``seconds``, then
    SIGCONT (a stalled process, a frozen VM, a long fsync): it keeps its connections and answers
    nothing. ``restart()`` sends SIGCONT now if the timer has not (so another fault's heal does
    not wait on a hung node); heal does that and waits for the topology to converge."""

    what = "node"

    def __init__(self, cluster: LoopbackCluster, seconds: float, tier: str) -> None:
        self.cluster, self.seconds, self.tier = cluster, seconds, tier
        self.hung: Node | None = None
        self._resume = _Timer(seconds, self._continue)

    @property
    def ended_at(self) -> float | None:
        return self._resume.ended_at

    def _choose(self) -> Node:
        raise NotImplementedError

    def inject(self) -> None:
        self.hung = self._choose()
        self.cluster.pause_node(self.hung)
        self._resume.start()

    def _continue(self) -> None:
        if self.hung is not None:
            self.cluster.resume_node(self.hung)

    def restart(self) -> None:
        self._resume.fire_now()

    def heal(self) -> None:
        self.restart()
        self.cluster.wait_for(f"the hung {self.what} back in the topology", self.cluster.converged, CONVERGE_TIMEOUT_S)


class HangMaster(_HangNode):
    """SIGSTOP the current master of a data ``tier`` for ``seconds``. Under the Sentinels'
    down-after it is a pause the clients ride out; longer, the Sentinels fail it over and it comes
    back as a master nobody names, until they demote it."""

    what = "master"

    def __init__(self, cluster: LoopbackCluster, seconds: float, tier: str = "cache") -> None:
        super().__init__(cluster, seconds, tier)
        self.name = f"{tier} master hung (SIGSTOP) {seconds:g} s"

    def _choose(self) -> Node:
        return self.cluster.masters(self.tier)[0]


class HangReplica(_HangNode):
    """SIGSTOP the first running replica of a data ``tier`` for ``seconds``: held longer than the
    Sentinels' down-after, they see it down and may not promote it meanwhile."""

    what = "replica"

    def __init__(self, cluster: LoopbackCluster, seconds: float, tier: str = "cache") -> None:
        super().__init__(cluster, seconds, tier)
        self.name = f"{tier} replica hung (SIGSTOP) {seconds:g} s"

    def _choose(self) -> Node:
        for node in self.cluster.tier_nodes(self.tier):
            if node.running and self.cluster.role(node) == "slave":
                return node
        raise RuntimeError(f"{self.tier} tier: no replica running to hang")


class RollingRestart:
    """The pods of a data ``tier`` restarted one by one in ``ordinals`` order (a StatefulSet
    rolling update goes from the highest ordinal down), each as the kubelet does it: the rendered
    ``prestop-redis.sh`` hook (a master hands over first), SIGTERM, the start script again, and
    the next pod only once this one passes the rendered readiness probe. ``inject()`` returns
    when the last pod is ready (within ``POD_READY_TIMEOUT_S`` each); heal only waits for the
    Sentinels to agree."""

    POD_READY_TIMEOUT_S = 60.0

    def __init__(self, cluster: LoopbackCluster, tier: str = "cache", ordinals: Sequence[int] = (2, 1, 0)) -> None:
        self.cluster, self.tier, self.ordinals = cluster, tier, tuple(ordinals)
        nodes = cluster.tier_nodes(tier)
        bad = [o for o in self.ordinals if not 0 <= o < len(nodes)]
        if bad:
            raise ValueError(f"ordinals {bad}: the {tier} tier has pods 0 to {len(nodes) - 1}")
        self.name = f"{tier} rolling restart " + ",".join(nodes[o].name for o in self.ordinals)
        self.ended_at: float | None = None
        self.hooks: list[str] = []  # what each preStop hook said

    def inject(self) -> None:
        nodes = self.cluster.tier_nodes(self.tier)
        for ordinal in self.ordinals:
            node = nodes[ordinal]
            hook = self.cluster.run_script(node, "prestop-redis.sh", timeout=60)
            self.hooks.append(f"{node.name}: {hook.stderr.strip().splitlines()[-1:] or ['']}")
            self.cluster.kill_node(node, signal.SIGTERM)
            self.cluster.start_node(node)
            ready = lambda n=node: self.cluster.run_script(n, "probe-redis.sh", "readiness", "2").returncode == 0  # noqa: E731
            self.cluster.wait_for(f"{node.name} ready after its restart", ready, self.POD_READY_TIMEOUT_S)
        self.ended_at = time.monotonic()

    def heal(self) -> None:
        self.cluster.wait_for(
            "the Sentinels agreeing after the rolling restart", self.cluster.converged, CONVERGE_TIMEOUT_S
        )


class IptablesUnavailable(RuntimeError):
    """iptables is missing or may not be used (not root): a partition cannot be drilled here."""


def iptables_problem() -> str | None:
    """Why :class:`Partition` cannot run here (None: it can): iptables missing, or not allowed to
    list the filter table (it needs root or CAP_NET_ADMIN)."""
    if shutil.which("iptables") is None:
        return "iptables is not installed (make deps installs it: Debian package iptables)"
    try:
        listed = subprocess.run(["iptables", "-w", "5", "-S", "OUTPUT"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"iptables -S OUTPUT failed: {exc}"
    if listed.returncode != 0:
        return f"iptables may not be used here (root or CAP_NET_ADMIN needed): {listed.stderr.strip()}"
    return None


class LoopbackChain:
    """A chain of iptables rules of its own (``DRILL-<random>``), jumped to from OUTPUT for
    packets on the loopback interface only; ``remove()`` takes the jump, the rules and the chain
    away again (idempotent). A context manager, so rules never outlive a failing test."""

    def __init__(self) -> None:
        self.name = f"DRILL-{secrets.token_hex(4)}"
        self.active = False

    @staticmethod
    def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise IptablesUnavailable(f"iptables {' '.join(args)}: {done.stderr.strip()}")
        return done

    def create(self, rules: Sequence[Sequence[str]]) -> None:
        """Create the chain with ``rules`` (each the arguments after ``-A <chain>``), then the jump."""
        problem = iptables_problem()
        if problem:
            raise IptablesUnavailable(problem)
        self._iptables("-N", self.name)
        self.active = True
        try:
            for rule in rules:
                self._iptables("-A", self.name, *rule)
            self._iptables("-I", "OUTPUT", "1", "-o", "lo", "-j", self.name)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        if not self.active:
            return
        # The jump may be missing (create failed before it): delete it while one is there, bounded.
        for _ in range(5):
            if self._iptables("-D", "OUTPUT", "-o", "lo", "-j", self.name, check=False).returncode != 0:
                break
        self._iptables("-F", self.name, check=False)
        self._iptables("-X", self.name)
        self.active = False

    def exists(self) -> bool:
        return self._iptables("-S", self.name, check=False).returncode == 0

    def __enter__(self) -> LoopbackChain:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _remove_after(self.remove, exc)


def _remove_after(remove: Callable[[], None], exc: BaseException | None) -> None:
    """Remove a chain on the way out of a ``with``. A removal that fails raises (a chain left
    behind must fail the run), but not over the drill's own exception, which says more: then it
    is printed beside it."""
    try:
        remove()
    except Exception as failure:
        if exc is None:
            raise
        print(f"could not remove the drill's iptables chain: {failure}", file=sys.stderr)


class Partition:
    """The current master of a data ``tier`` cut off from every other pod of the rehearsal (its
    replicas, the Sentinels, the other tier) for ``seconds``, while clients still reach it: the
    network split that lets an old master keep acknowledging writes nobody will keep.

    On loopback the pods connect from their own addresses (the rehearsal's ``bind-source-addr``)
    and the clients from 127.0.0.1, so the cut is by address: packets between the master's
    address and any other address of the rehearsal's 127.a.b.0/24 block are dropped (silently,
    as a real split: no reset, connections just stop). The rules live in a :class:`LoopbackChain`
    of their own; a timer lifts them after ``seconds``, heal lifts them too (and waits for the
    topology to converge), and the fault is a context manager whose exit lifts them whatever
    happened."""

    def __init__(self, cluster: LoopbackCluster, seconds: float, tier: str = "cache") -> None:
        self.cluster, self.seconds, self.tier = cluster, seconds, tier
        self.name = f"{tier} master partitioned from replicas and Sentinels {seconds:g} s"
        self.chain = LoopbackChain()
        self.isolated: Node | None = None
        self._lift = _Timer(seconds, self.chain.remove)

    @property
    def ended_at(self) -> float | None:
        return self._lift.ended_at

    def rules(self, node: Node) -> list[list[str]]:
        """The chain's rules cutting ``node`` off from the rest of the rehearsal's block."""
        block = f"{self.cluster.prefix}.0/24"
        return [
            ["-s", node.host, "-d", node.host, "-j", "RETURN"],
            ["-s", node.host, "-d", block, "-j", "DROP"],
            ["-s", block, "-d", node.host, "-j", "DROP"],
        ]

    def inject(self) -> None:
        self.isolated = self.cluster.masters(self.tier)[0]
        self.chain.create(self.rules(self.isolated))
        self._lift.start()

    def restart(self) -> None:
        """Lift the partition now if the timer has not."""
        self._lift.fire_now()

    def heal(self) -> None:
        self.restart()
        self.cluster.wait_for("the topology after the partition", self.cluster.converged, CONVERGE_TIMEOUT_S)

    def __enter__(self) -> Partition:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(Exception):
            self._lift.fire_now()
        _remove_after(self.chain.remove, exc)


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

    @property
    def ended_at(self) -> float | None:
        """When the last of the faults that end by themselves ended (None: one has not, or none does)."""
        ends = [getattr(f, "ended_at", None) for f in self.faults if hasattr(f, "ended_at")]
        return max(ends) if ends and None not in ends else None  # type: ignore[type-var]

    def inject(self) -> None:
        for index, fault in enumerate(self.faults):
            if index and self.gap_s:
                time.sleep(self.gap_s)
            fault.inject()

    def restart(self) -> None:
        """Restart every member that can be (so a ``Together`` nests in another)."""
        for fault in self.faults:
            restart = getattr(fault, "restart", None)
            if restart is not None:
                restart()

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
