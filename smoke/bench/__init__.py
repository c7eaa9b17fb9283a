"""The benchmark behind ``make bench``: what each cache strategy costs, side by side with raw redis-py.

Every figure is measured in one run against the rehearsal (the rendered dev stack as real
processes on loopback) and compared with a baseline taken in the same process and the same run,
because absolute times on a shared machine drift from run to run while ratios hold. The parts:

* :mod:`smoke.bench.operations` — round trips, commands and latency per strategy operation;
* :mod:`smoke.bench.memory` — bytes per cached entry, our layout against the seed's;
* :mod:`smoke.bench.growth` — latency as the keyspace grows to 1M keys;
* :mod:`smoke.bench.concurrency` — rate-limit exactness under 8 clients, mixed-workload throughput;
* :mod:`smoke.bench.server_cost` — the server's CPU time per call (``INFO commandstats``);
* :mod:`smoke.bench.capacity` — several client processes running the mix: ops/s, CPU, bottleneck;
* :mod:`smoke.bench.ceiling` — the strategies' commands replayed by valkey-/redis-benchmark;
* :mod:`smoke.bench.restore` — the backup drill at the size production holds;
* :mod:`smoke.bench.failover` — five SIGKILL failovers through :mod:`smoke.drills.failover`;
* :mod:`smoke.bench.dataset` — realistic DICT entries and the pipelined bulk fill;
* :mod:`smoke.bench.measure` — counting round trips and commands, percentiles;
* :mod:`smoke.bench.report` — ``build/bench.json`` and the printed table;
* :mod:`smoke.bench.picture` — ``build/bench.png``.

The benchmark is not a test: ``tests/test_bench.py`` runs it with tiny sizes so it cannot rot.
"""
