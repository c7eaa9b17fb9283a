"""Drills: what clients do, what is done to the topology, and what must hold afterwards.

In the spirit of Jepsen's tests, a drill is three separate, composable parts:

- a **workload** (:mod:`smoke.drills.workload`): clients doing real work through the strategies
  and recording what they were told (every acknowledged write, every unconfirmed or failed one);
- a **fault** (:mod:`smoke.drills.faults`): what happens to the topology (a killed master, a
  forced failover, a full cluster loss) and how it is healed afterwards;
- **checkers** (:mod:`smoke.drills.checkers`): what must hold over the recorded history (no
  confirmed write lost, the outage within its bound, exactly one master, a dataset restored).

:class:`smoke.drills.drill.Drill` runs one composition: workloads start, the fault is injected
after a steady second, the drill waits for recovery, the workloads stop, the fault is healed and
each checker gives its verdict. The failover drill (:mod:`smoke.drills.failover`, used by the
smoke suite and the benchmark, on each data tier), the backup drill (:mod:`smoke.drills.backup`,
both tiers) and the eviction drill (:mod:`smoke.drills.eviction`: the cache tier flooded while
decisions run on the state tier) are such compositions; a new drill adds a fault or a checker,
not a new loop.
"""
