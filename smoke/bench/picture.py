"""``build/bench.png``: the benchmark at a glance, drawn from ``bench.json`` (matplotlib, headless).

Four panels: client-side latency per operation (p50 and p99) against the raw ``GET``/``SET EX``
p99 and the 1.5x target; the server's CPU time per call against the raw calls'; the layer's
capacity per number of client processes (ops/s, with p99); memory per cached entry against the
seed layout and the 0.55 target. A panel whose section the run did not produce says so instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smoke.bench.report import MEMORY_RATIO_LIMIT, P99_RATIO_LIMIT, baseline_of


def draw(report: dict[str, Any], path: Path) -> Path:
    """Write the picture of ``report`` (a bench.json document) to ``path``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(15, 10))
    _latency(axes[0][0], report)
    _server_cost(axes[0][1], report)
    _capacity(axes[1][0], report)
    _memory(axes[1][1], report)
    machine = report.get("machine", {})
    figure.suptitle(
        f"make bench: {machine.get('redis_server', '?')}, {machine.get('cpus', '?')} cores, "
        f"{machine.get('started_at', '')} (load {machine.get('loadavg_before', '?')} before)"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _latency(ax: Any, report: dict[str, Any]) -> None:
    ops = report["operations"]
    names = list(ops)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [ops[n]["p50_us"] for n in names], 0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [ops[n]["p99_us"] for n in names], 0.4, label="p99")
    for base, style in (("get", "--"), ("setex", ":")):
        p99 = report["baseline"][base]["p99_us"]
        ax.axhline(p99, color="black", linestyle=style, linewidth=1, label=f"raw {base} p99")
        ax.axhline(
            p99 * P99_RATIO_LIMIT, color="red", linestyle=style, linewidth=1, label=f"{P99_RATIO_LIMIT}x raw {base}"
        )
    ax.set_xticks(list(x), [f"{n} ({baseline_of(n)})" for n in names], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("µs per call (client side)")
    ax.set_title("latency per operation against the raw call")
    ax.legend(fontsize=7)


def _server_cost(ax: Any, report: dict[str, Any]) -> None:
    cost = report.get("server_cost")
    if not cost:
        _absent(ax, "server cost: not measured in this run")
        return
    names = list(cost["operations"])
    values = [cost["operations"][n]["usec_per_call"] for n in names]
    ax.bar(range(len(names)), values, color="tab:purple")
    for base, style in (("get", "--"), ("setex", ":")):
        ax.axhline(cost["baseline"][base]["usec_per_call"], color="black", linestyle=style, label=f"raw {base}")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("server CPU µs per call (INFO commandstats)")
    ax.set_title("server cost per operation (both tiers' masters)")
    ax.legend(fontsize=7)


def _capacity(ax: Any, report: dict[str, Any]) -> None:
    runs = (report.get("capacity") or {}).get("processes") or []
    if not runs:
        _absent(ax, "capacity: not measured in this run")
        return
    counts = [str(r["processes"]) for r in runs]
    ax.bar(counts, [r["ops_per_second"] for r in runs], color="tab:green", label="ops/s (all processes)")
    ax.set_xlabel("client processes")
    ax.set_ylabel("mixed operations per second")
    ceiling = (report.get("capacity") or {}).get("server_ceiling") or {}
    if ceiling.get("mix_ops_per_second"):
        ax.axhline(ceiling["mix_ops_per_second"], color="tab:green", linestyle="--", label="server-side ceiling (mix)")
    right = ax.twinx()
    right.plot(counts, [r["p99_us"] for r in runs], "o-", color="tab:red", label="p99")
    right.set_ylabel("p99 µs")
    right.set_ylim(bottom=0)
    ax.set_title("capacity per number of client processes")
    ax.legend(loc="upper left", fontsize=7)
    right.legend(loc="upper right", fontsize=7)


def _memory(ax: Any, report: dict[str, Any]) -> None:
    mem = report["memory"]
    seed = mem["seed_layout_bytes_per_entry"]
    ours = mem["bytes_per_entry"]
    names = ["ours", "ours, written\nin the last 5 min", "seed layout"]
    ax.bar(names, [ours, ours, seed], color=["tab:blue", "tab:blue", "tab:gray"], label="cache tier")
    marker = mem["marker_bytes_per_written_entry"]
    ax.bar(names[1], marker, bottom=ours, color="tab:orange", label="state tier (version marker)")
    ax.axhline(seed * MEMORY_RATIO_LIMIT, color="red", linestyle="--", label=f"target {MEMORY_RATIO_LIMIT} x seed")
    ax.set_ylabel("bytes per cached entry")
    ax.set_title(f"memory per entry at {mem['entries']} entries ({mem['bytes_per_entry'] / seed:.2f} of the seed)")
    ax.legend(fontsize=7)


def _absent(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()
