"""Healthy-event throughput with 5% poison events, against 0% poison in the same run.

An application thread publishes events with ``system.publish`` into a channel a
consumer handles with the settings a user gets by default. In the ``poison`` variant
every 20th event raises on every attempt: it is retried later with its delay and
dead-lettered after ``max_deliveries``, while the other events keep flowing. We time
from the first publish to the last *healthy* event handled (poison events finish
later, by design: their retries wait 0.1 + 0.2 + 0.4 + 0.8 s), and compare the
healthy events' rate with the ``clean`` variant, where no event fails.

Target: poison/clean >= 0.8x (issue 10).
"""

from __future__ import annotations

import argparse
import threading

from benchmarks._harness import best_of, describe_machine, now
from reactor import Event, Topology

TARGET = 0.8
POISON_EVERY = 20


def _run_once(events: int, *, poison: bool) -> float:
    healthy = events - (events // POISON_EVERY if poison else 0)
    handled = 0
    done = threading.Event()

    def handle(event: Event) -> None:
        nonlocal handled
        if poison and event.data % POISON_EVERY == POISON_EVERY - 1:
            raise ValueError("poison")
        handled += 1  # one consumer: one thread writes it
        if handled == healthy:
            done.set()

    topo = Topology("bench-failures")
    topo.channel("work")
    topo.consumer("worker", handle, channel="work")
    with topo.start() as system:
        started = now()
        for n in range(events):
            system.publish("work", "job.run", n)
        if not done.wait(120):
            raise RuntimeError(f"only {handled} of {healthy} healthy events handled in 120 s")
        seconds = now() - started
        system.stop(timeout=10, drain=False)
    return seconds


def main(argv: list[str]) -> int:
    """Healthy-event throughput with 5% poison events against 0% (target >= 0.8x)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks failures", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best of each is kept")
    args = parser.parse_args(argv)
    print(f"failures: {args.events:,} events per run, best of {args.repeat}; {describe_machine()}")
    results = {
        r.name: r
        for r in best_of(
            {
                "clean": lambda n: _run_once(n, poison=False),
                "poison": lambda n: _run_once(n, poison=True),
            },
            args.repeat,
            args.events,
        )
    }
    clean, poisoned = results["clean"], results["poison"]
    healthy = args.events - args.events // POISON_EVERY
    clean_rate = clean.rate
    poison_rate = healthy / poisoned.best_s
    ratio = poison_rate / clean_rate
    print(f"  clean   {clean_rate:>12,.0f} healthy events/s")
    print(f"  poison  {poison_rate:>12,.0f} healthy events/s  (5% of events always fail)")
    verdict = "meets" if ratio >= TARGET else "MISSES"
    print(f"  poison/clean = {ratio:.2f}x  ({verdict} the {TARGET}x target)")
    return 0
