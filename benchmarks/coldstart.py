"""Cold start: publish to handler of a pool scaled to zero, against a warm member.

A pool with ``min_size=0`` has no member while its group has nothing to do. We
publish one event, time until its handler starts, wait for the pool to go back to
zero (``idle_s`` short), and repeat; the baseline is the same publish-to-handler
gap with one member already running (``min_size=1``), in the same run. The gap is
the pool's look (at most 10 ms at zero), a member's start and its join.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

from benchmarks._harness import describe_machine
from reactor import Event, PoolScaling, System, Topology


def _measure(rounds: int, min_size: int) -> list[float]:
    gaps: list[float] = []
    started = threading.Event()
    handled_at: list[float] = []

    def handle(event: Event) -> None:
        handled_at.append(time.perf_counter())
        started.set()

    topo = Topology("coldstart")
    topo.channel("jobs")
    topo.pool(
        "fn",
        handle,
        channel="jobs",
        min_size=min_size,
        max_size=1,
        scaling=PoolScaling(interval_s=0.01, idle_s=0.0),
    )
    with topo.start() as system:
        for _ in range(rounds):
            _wait(lambda: _members(system) == min_size)
            started.clear()
            before = time.perf_counter()
            system.publish("jobs", "job.run", None)
            if not started.wait(10):
                raise RuntimeError("the handler never started")
            gaps.append(handled_at[-1] - before)
            system.wait_idle(10)
    return gaps


def _members(system: System) -> int:
    return sum(1 for actor in system.metrics().actors if actor.supervisor == "fn")


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the pool did not scale back to zero")
        time.sleep(0.002)


def main(argv: list[str]) -> int:
    """Cold start of a pool at zero members vs a warm member (publish to handler)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks coldstart")
    parser.add_argument("--rounds", type=int, default=50, help="cold starts measured")
    args = parser.parse_args(argv)
    print(describe_machine())
    warm = _measure(args.rounds, min_size=1)
    cold = _measure(args.rounds, min_size=0)
    for name, gaps in (("warm member", warm), ("cold start", cold)):
        ms = sorted(g * 1000 for g in gaps)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(f"{name:>12}: p50 {statistics.median(ms):7.2f} ms   p99 {p99:7.2f} ms")
    ratio = statistics.median(cold) / statistics.median(warm)
    print(f"cold start costs {ratio:.1f}x a warm member's publish-to-handler gap (p50)")
    return 0
