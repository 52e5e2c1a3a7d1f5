"""What the live dashboard costs: pipeline throughput with it drawing, and without.

The same reactor pipeline as ``pipeline`` (iterable producer -> memory channel ->
consumer, N events) runs three times per round, interleaved: alone, with a
:class:`~reactor.faces.dashboard.Dashboard` drawing live frames at the rate
``reactor run`` uses (4 per second), and at its top rate (10 per second), into a
terminal-sized console that writes to ``os.devnull``. The dashboard reads only
``system.metrics()``, ``health()`` and ``recent_lifecycle()``, so its cost is the
GIL time of building and rendering frames (rich needs ~5-10 ms per frame).
Target: at most 5% at the rate the CLI draws.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable

from rich.console import Console

from benchmarks._harness import best_of, describe_machine
from benchmarks.pipeline import run_reactor
from reactor import System
from reactor.faces.dashboard import DEFAULT_REFRESH_PER_SECOND, Dashboard

TARGET_COST = 0.05
CLI_FPS = DEFAULT_REFRESH_PER_SECOND


def _run(events: int, fps: float) -> float:
    """The pipeline benchmark's reactor run, with live frames drawn alongside at ``fps``."""
    items = ({"i": i} for i in range(events))
    if not fps:
        return run_reactor(items, events)

    def draw(system: System) -> Callable[[], None]:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - closed by the returned stop()
        console = Console(file=devnull, force_terminal=True, width=120, height=50)
        view = Dashboard(system, console=console, refresh_per_second=fps)
        done = threading.Event()
        drawer = threading.Thread(
            target=view.run, kwargs={"stop_event": done}, name="bench-dashboard"
        )
        drawer.start()

        def stop() -> None:
            done.set()
            drawer.join(10)
            devnull.close()

        return stop

    return run_reactor(items, events, alongside=draw)


def main(argv: list[str]) -> int:
    """Pipeline throughput with the live dashboard drawing (4 and 10 frames/s) vs without."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks dashboard", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(argv)
    print(f"dashboard: {options.events:,} events, best of {options.repeat}; {describe_machine()}")
    results = best_of(
        {
            "without": lambda n: _run(n, 0),
            f"dashboard@{CLI_FPS:g}/s": lambda n: _run(n, CLI_FPS),
            "dashboard@10/s": lambda n: _run(n, 10),
        },
        options.repeat,
        options.events,
    )
    rates = {result.name: result.rate for result in results}
    for name, rate in rates.items():
        print(f"{name:<16} {rate:>12,.0f} events/s")
    for name in (f"dashboard@{CLI_FPS:g}/s", "dashboard@10/s"):
        cost = 1 - rates[name] / rates["without"]
        print(f"{name:<16} costs {cost:+.1%} of throughput")
    cost = 1 - rates[f"dashboard@{CLI_FPS:g}/s"] / rates["without"]
    verdict = "meets" if cost <= TARGET_COST else "MISSES"
    print(
        f"at the CLI's {CLI_FPS:g} frames/s: {cost:+.1%} (target <= {TARGET_COST:.0%}: {verdict})"
    )
    return 0
