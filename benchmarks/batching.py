"""``batching``: transport to a batch consumer (``handle_batch``) vs. threads+SimpleQueue.

The events are made before the clock starts (as ``pipeline --prebuilt``), so
this measures the transport alone:

* ``reactor-batch``: the ``pipeline`` topology (an iterable producer, a
  ``memory`` channel of capacity 10,000, one consumer), but the consumer is
  declared with ``batch_size`` (100 by default) and counts each batch it gets.
  Timed from releasing the source until ``System.wait_idle()`` returns: every
  event handled and its batch acked.
* ``threads``: ``pipeline``'s plain threads joined by two ``queue.SimpleQueue`` s,
  one ``put``/``get`` per event per hop, in the same run.

Issue 13 asks ``reactor-batch`` for at least 0.5x ``threads``.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable

from benchmarks._harness import Result, best_of, describe_machine, gated_source, now
from benchmarks.pipeline import SOURCE, TOPIC, run_threads
from reactor import Event, Topology

__all__ = ["main", "run_reactor_batch"]

DEFAULT_EVENTS = 200_000
DEFAULT_REPEAT = 3
DEFAULT_BATCH = 100
TARGET = 0.5  # reactor-batch / threads
_TIMEOUT_S = 600.0


def run_reactor_batch(events: list[Event], batch_size: int) -> float:
    """One run; returns the seconds from releasing the source to idle."""
    go = threading.Event()
    handled = 0

    def sink(batch: list[Event]) -> None:
        nonlocal handled
        handled += len(batch)

    topo = Topology("bench-batch")
    topo.channel("c", capacity=10_000)
    topo.consumer(
        "sink",
        sink,
        channel="c",
        pattern="#",
        batch_size=batch_size,
        prefetch=max(256, 2 * batch_size),
        batch_timeout=1.0,
    )
    topo.producer(SOURCE, channel="c", topic=TOPIC, source=gated_source(events, go))
    with topo.start() as system:
        started = now()
        go.set()
        system.wait_idle(timeout=_TIMEOUT_S)
        elapsed = now() - started
    if handled != len(events):
        raise RuntimeError(f"reactor-batch handled {handled} of {len(events)} events")
    return elapsed


def main(argv: list[str]) -> int:
    """Transport to a batch consumer (batches of 100) vs. threads+SimpleQueue."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks batching", description=main.__doc__)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="default %(default)s")
    parser.add_argument(
        "--repeat", type=int, default=DEFAULT_REPEAT, help="runs; the best counts (%(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH, help="events per batch (%(default)s)"
    )
    args = parser.parse_args(argv)
    if args.events <= 0 or args.repeat <= 0 or args.batch_size <= 0:
        parser.error("--events, --repeat and --batch-size must be positive")
    count = args.events
    ready = [Event.create(TOPIC, {"n": n}, source=SOURCE) for n in range(count)]
    # A batch the last events cannot fill waits batch_timeout: not what is measured.
    if count % args.batch_size:
        parser.error("--events must be a multiple of --batch-size")

    variants: dict[str, Callable[[int], float]] = {
        "reactor-batch": lambda n: run_reactor_batch(ready, args.batch_size),
        "threads": lambda n: run_threads(ready, n),
    }
    print(
        f"batching: {count:,} events made before the clock starts, batches of "
        f"{args.batch_size}, best of {args.repeat}"
    )
    print(f"machine: {describe_machine()}")
    results: dict[str, Result] = {r.name: r for r in best_of(variants, args.repeat, count)}
    print()
    for result in results.values():
        print(f"{result.name:<14} {result.rate:>10,.0f} events/s  (best {result.best_s:.3f} s)")
    ratio = results["reactor-batch"].rate / results["threads"].rate
    verdict = "meets" if ratio >= TARGET else "MISSES"
    print(f"\nreactor-batch/threads  {ratio:5.2f}x  (target >= {TARGET}x: {verdict})")
    per_event_us = 1e6 / results["reactor-batch"].rate
    print(f"reactor-batch per event: {per_event_us:.2f} us")
    return 0
