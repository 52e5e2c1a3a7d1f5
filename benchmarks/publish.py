"""``publish``: ``System.publish`` from application threads, and what an event costs to make.

Two parts, each against baselines measured in the same run:

* **making** (one thread, no transport): ``Event.create(topic, data, source=...)``
  against the construction of a bare frozen slots attrs class with the same nine
  fields, given its values ready (issue 13, target 1: at most 2x); and one
  ``system.publish(channel, topic, data)`` call into a memory channel nobody
  subscribes to, against ``Event.create`` of the same arguments (target 0: at most
  2x). The channel actor still runs beside the calling thread (it settles the
  unrouted events), as it would in a service. Each is timed on the calling
  thread's CPU clock (``time.thread_time``), so what other processes take does
  not count, and nor does the channel actor's own work: it is the call itself.
  Each is the best of many short runs (``MAKING_ROUNDS`` per ``--repeat``, a
  twentieth of the events each), interleaved: on a loaded machine the best of
  three long runs still swings by 2x.
* **end to end**: ``N`` events from application threads into a ``memory`` channel
  with one consumer that counts, timed from the first call until ``wait_idle()``
  returns (every event handled and acked):

  - ``publish``: one ``system.publish`` per event, from one thread;
  - ``publish-4t``: the same from 4 threads at once, ``N/4`` each;
  - ``many``: ``Event.create`` per event and ``system.publish_many`` per batch of
    ``--batch`` events, from one thread;
  - ``threads``: the baseline, carrying the same events over the same hops: the
    application thread makes each event with ``Event.create`` and ``put`` s it on a
    ``queue.SimpleQueue`` to a relay thread (the channel), which ``put`` s it on a
    second one to the consumer thread, which counts.

Target 0: ``publish`` and ``many`` >= 0.8x ``threads``; ``publish-4t`` no worse in
total than ``publish``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from benchmarks import _harness
from benchmarks._harness import Result, best_of, describe_machine, now
from reactor import Event, System, Topology

__all__ = ["main"]

TOPIC = "bench.tick"
SOURCE = "src"
CHANNEL = "c"
DEFAULT_EVENTS = 100_000
DEFAULT_REPEAT = 3
DEFAULT_BATCH = 100
MAKING_ROUNDS = 10
THREADS = 4
_TIMEOUT_S = 600.0
# Making is timed on the calling thread's CPU clock: what the call itself costs,
# untouched by other processes taking the CPU (this machine is shared).
cpu_now = time.thread_time


@attrs.frozen(slots=True, kw_only=True)
class Bare:
    """The nine fields of an event, with no checks, ids or freezing."""

    id: str
    topic: str
    data: Any
    key: str | None
    time: datetime
    source: str
    headers: Any
    correlation_id: str | None
    causation_id: str | None


def _items(events: int) -> list[dict[str, Any]]:
    # Made before the clock starts, so every variant pays only for its own work.
    return [{"n": i, "name": "tick", "ok": True} for i in range(events)]


# -- making ------------------------------------------------------------------------


def run_attrs(items: list[dict[str, Any]]) -> float:
    """Construct a ``Bare`` per item, with every value ready."""
    ident = "0190f1f4-7c3a-7a01-9c1e-5b2d8e0f4a77"
    stamp = datetime.now(UTC)
    started = cpu_now()
    for item in items:
        Bare(
            id=ident,
            topic=TOPIC,
            data=item,
            key=None,
            time=stamp,
            source=SOURCE,
            headers=None,
            correlation_id=ident,
            causation_id=None,
        )
    return cpu_now() - started


def run_create(items: list[dict[str, Any]]) -> float:
    """``Event.create`` per item, with a source (what a producer does)."""
    create = Event.create
    started = cpu_now()
    for item in items:
        create(TOPIC, item, source=SOURCE)
    return cpu_now() - started


def run_create_plain(items: list[dict[str, Any]]) -> float:
    """``Event.create(topic, data)``: the same arguments as ``system.publish``."""
    create = Event.create
    started = cpu_now()
    for item in items:
        create(TOPIC, item)
    return cpu_now() - started


def _topology(consumer: Callable[[Event], None] | None) -> Topology:
    topo = Topology("bench-publish")
    topo.channel(CHANNEL, capacity=10_000)
    if consumer is not None:
        topo.consumer("sink", consumer, channel=CHANNEL, pattern="#")
    return topo


def run_call(items: list[dict[str, Any]]) -> float:
    """``system.publish`` per item into a channel nobody subscribes to: the call alone."""
    with _topology(None).start() as system:
        publish = system.publish
        started = cpu_now()
        for item in items:
            publish(CHANNEL, TOPIC, item)
        elapsed = cpu_now() - started
        system.wait_idle(timeout=_TIMEOUT_S)
    return elapsed


# -- end to end --------------------------------------------------------------------


def _end_to_end(items: list[dict[str, Any]], send: Callable[[System, list[Any]], None]) -> float:
    handled = 0

    def sink(event: Event) -> None:
        nonlocal handled
        handled += 1

    with _topology(sink).start() as system:
        started = now()
        send(system, items)
        system.wait_idle(timeout=_TIMEOUT_S)
        elapsed = now() - started
    if handled != len(items):
        raise RuntimeError(f"reactor handled {handled} of {len(items)} events")
    return elapsed


def _publish_each(system: System, items: list[Any]) -> None:
    publish = system.publish
    for item in items:
        publish(CHANNEL, TOPIC, item)


def run_publish(items: list[dict[str, Any]]) -> float:
    """One ``system.publish`` per event from the calling thread."""
    return _end_to_end(items, _publish_each)


def run_publish_threads(items: list[dict[str, Any]]) -> float:
    """``system.publish`` per event from ``THREADS`` threads at once."""

    def send(system: System, items: list[Any]) -> None:
        shares = [items[i::THREADS] for i in range(THREADS)]
        threads = [
            threading.Thread(target=_publish_each, args=(system, share), daemon=True)
            for share in shares
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(_TIMEOUT_S)

    return _end_to_end(items, send)


def run_many(items: list[dict[str, Any]], batch: int) -> float:
    """``Event.create`` per event, ``system.publish_many`` per batch."""

    def send(system: System, items: list[Any]) -> None:
        create = Event.create
        publish_many = system.publish_many
        for start in range(0, len(items), batch):
            publish_many(CHANNEL, [create(TOPIC, item) for item in items[start : start + batch]])

    return _end_to_end(items, send)


def run_threads(items: list[dict[str, Any]]) -> float:
    """Application thread -> SimpleQueue -> relay thread -> SimpleQueue -> consumer thread."""
    events = len(items)
    done = threading.Event()
    to_channel: queue.SimpleQueue[Event] = queue.SimpleQueue()
    to_consumer: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def relay() -> None:
        get, put = to_channel.get, to_consumer.put
        for _ in range(events):
            put(get())

    def consume() -> None:
        get = to_consumer.get
        for _ in range(events):
            get()
        done.set()

    threads = [threading.Thread(target=t, daemon=True) for t in (consume, relay)]
    for thread in threads:
        thread.start()
    create = Event.create
    put = to_channel.put
    started = now()
    for item in items:
        put(create(TOPIC, item))
    if not done.wait(_TIMEOUT_S):
        raise RuntimeError(f"plain threads did not finish in {_TIMEOUT_S}s")
    elapsed = now() - started
    for thread in threads:
        thread.join()
    return elapsed


# -- command line ------------------------------------------------------------------


def _ratio(name: str, value: float, target: str, met: bool) -> None:
    print(f"{name:<28} {value:5.2f}x  (target {target}: {'meets' if met else 'MISSES'})")


def main(argv: list[str]) -> int:
    """system.publish from application threads, and Event.create against a bare attrs class."""
    parser = _harness.parser("publish", main.__doc__, events=DEFAULT_EVENTS, repeat=DEFAULT_REPEAT)
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help="events per publish_many call (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.events <= 0 or args.repeat <= 0 or args.batch <= 0:
        parser.error("--events, --repeat and --batch must be positive")
    events = args.events
    print(f"publish: {events:,} events, best of {args.repeat}")
    print(f"machine: {describe_machine()}")

    def fresh(run: Callable[[list[dict[str, Any]]], float]) -> Callable[[int], float]:
        return lambda n: run(_items(n))

    # Making is timed in many short runs (a twentieth of the events, MAKING_ROUNDS per
    # repeat), interleaved: the best of many is what survives a loaded machine.
    rounds = MAKING_ROUNDS * args.repeat
    short = max(1, events // 20)
    print(f"making (one thread): best of {rounds} runs of {short:,} events each")
    making = {
        r.name: r
        for r in best_of(
            {
                "attrs": fresh(run_attrs),
                "create": fresh(run_create),
                "create-plain": fresh(run_create_plain),
                "publish-call": fresh(run_call),
            },
            rounds,
            short,
            verbose=False,
        )
    }
    print("end to end (one consumer):")
    batch = args.batch
    e2e = {
        r.name: r
        for r in best_of(
            {
                "publish": fresh(run_publish),
                "publish-4t": fresh(run_publish_threads),
                "many": fresh(lambda items: run_many(items, batch)),
                "threads": fresh(run_threads),
            },
            args.repeat,
            events,
        )
    }
    results: dict[str, Result] = {**making, **e2e}
    print()
    for result in results.values():
        us = 1e6 / result.rate
        print(f"{result.name:<13} {result.rate:>10,.0f} events/s  {us:6.2f} us/event")
    print()

    def cost(name: str) -> float:
        return results[name].best_s

    def rate(name: str) -> float:
        return results[name].rate

    create_vs_attrs = cost("create") / cost("attrs")
    _ratio("create / attrs (cost)", create_vs_attrs, "<= 2x", create_vs_attrs <= 2.0)
    call = cost("publish-call") / cost("create-plain")
    _ratio("publish call / create (cost)", call, "<= 2x", call <= 2.0)
    for name in ("publish", "many"):
        ratio = rate(name) / rate("threads")
        _ratio(f"{name} / threads (rate)", ratio, ">= 0.8x", ratio >= 0.8)
    threads = rate("publish-4t") / rate("publish")
    _ratio(f"publish {THREADS} threads / 1 (rate)", threads, ">= 1x", threads >= 1.0)
    return 0
