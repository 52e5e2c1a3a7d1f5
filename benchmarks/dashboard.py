"""What the live dashboard costs: pipeline throughput with it drawing, and without.

The same reactor pipeline as ``pipeline`` (iterable producer -> memory channel ->
consumer, N events) runs twice per round, interleaved: once alone, and once with
a :class:`~reactor.faces.dashboard.Dashboard` drawing live frames at its top rate
(10 per second) into a terminal-sized console that writes to ``os.devnull``. The
dashboard reads only ``system.metrics()``, ``health()`` and ``recent_lifecycle()``,
so its cost is the GIL time of building and rendering frames. Target: at most 5%.
"""

from __future__ import annotations

import argparse
import os
import threading

from rich.console import Console

from benchmarks._harness import best_of, describe_machine, gated_source, now
from reactor import Event, Topology
from reactor.faces.dashboard import Dashboard

TARGET_COST = 0.05


def _run(events: int, dashboard: bool) -> float:
    go = threading.Event()
    handled = 0

    def sink(event: Event) -> None:
        nonlocal handled
        handled += 1

    topo = Topology("bench-dashboard")
    topo.channel("c", capacity=10_000)
    topo.consumer("sink", sink, channel="c")
    topo.producer(
        "src",
        channel="c",
        topic="bench.tick",
        source=gated_source(({"i": i} for i in range(events)), go),
    )
    with open(os.devnull, "w") as devnull, topo.start() as system:
        stop = threading.Event()
        drawer = None
        if dashboard:
            console = Console(file=devnull, force_terminal=True, width=120, height=50)
            view = Dashboard(system, console=console, refresh_per_second=10)
            drawer = threading.Thread(
                target=view.run, kwargs={"stop_event": stop}, name="bench-dashboard"
            )
            drawer.start()
        started = now()
        go.set()
        system.wait_idle(timeout=600)
        elapsed = now() - started
        stop.set()
        if drawer is not None:
            drawer.join(10)
    if handled != events:
        raise RuntimeError(f"handled {handled} of {events} events")
    return elapsed


def main(argv: list[str]) -> int:
    """Pipeline throughput with the live dashboard drawing at 10 frames/s, vs without."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks dashboard", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(argv)
    print(f"dashboard: {options.events:,} events, best of {options.repeat}; {describe_machine()}")
    results = best_of(
        {
            "without": lambda n: _run(n, dashboard=False),
            "with-dashboard": lambda n: _run(n, dashboard=True),
        },
        options.repeat,
        options.events,
    )
    rates = {result.name: result.rate for result in results}
    for name, rate in rates.items():
        print(f"{name:<16} {rate:>12,.0f} events/s")
    cost = 1 - rates["with-dashboard"] / rates["without"]
    verdict = "meets" if cost <= TARGET_COST else "MISSES"
    print(f"dashboard cost {cost:+.1%} of throughput (target <= {TARGET_COST:.0%}: {verdict})")
    return 0
