"""``pipeline``: producer -> channel -> consumer throughput, reactor vs. baselines.

Every variant moves the same ``N`` events through the same three stages, each
stage on its own thread:

* ``reactor``: a ``Topology`` with an iterable producer, a ``memory`` channel
  (capacity 10,000, ``block``) and one consumer, timed from the moment the
  source is released (after ``Topology.start()`` has returned) until
  ``System.wait_idle()`` returns, i.e. until every event has been handled *and
  acked* back to the channel. Building, starting and stopping the system are
  not timed.
* ``naive-pykka``: three ``pykka.ThreadingActor`` s with pykka's default inbox;
  the producer ``tell`` s each event to a channel actor, which ``tell`` s it to
  the consumer: one message per event per hop, no batching, no backpressure,
  no acks. Timed until the consumer has counted ``N`` events.
* ``threads``: three plain threads joined by two ``queue.SimpleQueue`` s, one
  ``put``/``get`` per event per hop. Timed the same way.
* ``create-only`` (reference, no transport): one thread makes the ``N`` events
  and drops them. No pipeline over these events can beat it in one CPython
  process, since the GIL runs the stages one at a time: it is the ceiling.

In every variant the producer turns each source item (a small dict) into an
event with ``Event.create(topic, data, source=...)``, which is what reactor's
producer does, so all of them pay for the same event objects; consumers only
count. With ``--prebuilt`` the events are made before the clock starts and the
source yields them ready-made (reactor's producer passes an ``Event`` through
as it is), which measures the transport alone.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pykka

from benchmarks import _harness
from benchmarks._harness import Result, best_of, describe_machine, gated_source, now
from reactor import Event, System, Topology

__all__ = ["VARIANTS", "main", "run_create_only", "run_naive_pykka", "run_reactor", "run_threads"]

TOPIC = "bench.tick"
SOURCE = "src"
DEFAULT_EVENTS = 200_000
DEFAULT_REPEAT = 3
# What the issue asks of reactor, as a multiple of each baseline's rate.
TARGETS = {"naive-pykka": 5.0, "threads": 0.4}
_TIMEOUT_S = 600.0

Items = Iterable[Any]  # dicts (events made by the producer) or ready-made events


def _to_event(item: Any, create: Callable[..., Event] = Event.create) -> Event:
    # The same pass-through rule as reactor's ProducerRuntime.make_event.
    return item if item.__class__ is Event else create(TOPIC, item, source=SOURCE)


# -- reactor -----------------------------------------------------------------------


def run_reactor(
    items: Items, events: int, alongside: Callable[[System], Callable[[], None]] | None = None
) -> float:
    """One reactor run; returns the seconds from releasing the source to idle.

    ``alongside(system)`` starts something that runs with the pipeline (the
    dashboard benchmark draws frames) and returns how to stop it.
    """
    go = threading.Event()
    handled = 0

    def sink(event: Event) -> None:
        nonlocal handled
        handled += 1

    topo = Topology("bench")
    topo.channel("c", capacity=10_000)
    topo.consumer("sink", sink, channel="c", pattern="#")
    topo.producer(SOURCE, channel="c", topic=TOPIC, source=gated_source(items, go))
    with topo.start() as system:
        stop = alongside(system) if alongside is not None else None
        # Everything is started; the producer's first pull is blocked on ``go``.
        started = now()
        go.set()
        system.wait_idle(timeout=_TIMEOUT_S)
        elapsed = now() - started
        if stop is not None:
            stop()
    if handled != events:
        raise RuntimeError(f"reactor handled {handled} of {events} events")
    return elapsed


# -- naive pykka -------------------------------------------------------------------


class _NaiveConsumer(pykka.ThreadingActor):
    def __init__(self, expected: int, done: threading.Event) -> None:
        super().__init__()
        self.expected = expected
        self.done = done
        self.count = 0

    def on_receive(self, message: Any) -> None:
        self.count += 1
        if self.count == self.expected:
            self.done.set()


class _NaiveChannel(pykka.ThreadingActor):
    def __init__(self, consumer: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.consumer = consumer

    def on_receive(self, message: Any) -> None:
        self.consumer.tell(message)


class _NaiveProducer(pykka.ThreadingActor):
    def __init__(self, channel: pykka.ActorRef[Any], source: Iterator[Any]) -> None:
        super().__init__()
        self.channel = channel
        self.source = source

    def on_receive(self, message: Any) -> None:
        tell = self.channel.tell
        for item in self.source:
            tell(_to_event(item))


def run_naive_pykka(items: Items, events: int) -> float:
    """One naive-pykka run; returns the seconds from releasing the source to the last event."""
    go = threading.Event()
    done = threading.Event()
    consumer = _NaiveConsumer.start(events, done)
    channel = _NaiveChannel.start(consumer)
    producer = _NaiveProducer.start(channel, gated_source(items, go))
    try:
        producer.tell("run")  # its handler blocks on ``go`` until the clock starts
        started = now()
        go.set()
        if not done.wait(_TIMEOUT_S):
            raise RuntimeError(f"naive pykka did not handle {events} events in {_TIMEOUT_S}s")
        return now() - started
    finally:
        for ref in (producer, channel, consumer):
            ref.stop()


# -- plain threads -----------------------------------------------------------------


def _run_threads(
    targets: list[Callable[[], None]], go: threading.Event, done: threading.Event, what: str
) -> float:
    threads = [threading.Thread(target=t, name=f"bench:{t.__name__}", daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    started = now()
    go.set()
    if not done.wait(_TIMEOUT_S):
        raise RuntimeError(f"{what} did not finish in {_TIMEOUT_S}s")
    elapsed = now() - started
    for thread in threads:
        thread.join()
    return elapsed


def run_threads(items: Items, events: int) -> float:
    """One plain-threads run; returns the seconds from releasing the source to the last event."""
    go = threading.Event()
    done = threading.Event()
    to_channel: queue.SimpleQueue[Event] = queue.SimpleQueue()
    to_consumer: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def produce() -> None:
        put = to_channel.put
        for item in gated_source(items, go):
            put(_to_event(item))

    def relay() -> None:
        get, put = to_channel.get, to_consumer.put
        for _ in range(events):
            put(get())

    def consume() -> None:
        get = to_consumer.get
        count = 0
        for _ in range(events):
            get()
            count += 1
        if count == events:
            done.set()

    return _run_threads([consume, relay, produce], go, done, "plain threads")


# -- ceiling -----------------------------------------------------------------------


def run_create_only(items: Items, events: int) -> float:
    """The producer alone: make every event on one thread and drop it; no transport."""
    go = threading.Event()
    done = threading.Event()

    def produce() -> None:
        for item in gated_source(items, go):
            _to_event(item)
        done.set()

    return _run_threads([produce], go, done, "create-only")


# -- command line ------------------------------------------------------------------

VARIANTS: dict[str, Callable[[Items, int], float]] = {
    "reactor": run_reactor,
    "naive-pykka": run_naive_pykka,
    "threads": run_threads,
    "create-only": run_create_only,
}


def _items(events: int, prebuilt: bool) -> Callable[[], Items]:
    if not prebuilt:
        return lambda: ({"n": i} for i in range(events))

    def ready_made() -> Items:
        return [Event.create(TOPIC, {"n": i}, source=SOURCE) for i in range(events)]

    return ready_made


def main(argv: list[str]) -> int:
    """Producer -> channel -> consumer throughput: reactor vs. naive pykka vs. plain threads."""
    parser = _harness.parser("pipeline", main.__doc__, events=DEFAULT_EVENTS, repeat=DEFAULT_REPEAT)
    parser.add_argument(
        "--only",
        choices=list(VARIANTS),
        action="append",
        help="run only this variant (repeatable); ratios need reactor and a baseline",
    )
    parser.add_argument(
        "--prebuilt",
        action="store_true",
        help="make the events before the clock starts: measure the transport alone",
    )
    args = parser.parse_args(argv)
    if args.events <= 0 or args.repeat <= 0:
        parser.error("--events and --repeat must be positive")
    chosen = args.only or list(VARIANTS)
    make_items = _items(args.events, args.prebuilt)
    events = args.events

    def variant(run: Callable[[Items, int], float]) -> Callable[[int], float]:
        return lambda n: run(make_items(), n)

    mode = (
        "events made before the clock starts" if args.prebuilt else "events made by each producer"
    )
    print(f"pipeline: {events:,} events, best of {args.repeat}, {mode}")
    print(f"machine: {describe_machine()}")
    results: dict[str, Result] = {
        result.name: result
        for result in best_of(
            {name: variant(VARIANTS[name]) for name in chosen}, args.repeat, events
        )
    }

    print()
    for result in results.values():
        print(f"{result.name:<12} {result.rate:>10,.0f} events/s  (best {result.best_s:.3f} s)")
    print()
    reactor = results.get("reactor")
    ceiling = results.get("create-only")
    if reactor is not None:
        for baseline, target in TARGETS.items():
            other = results.get(baseline)
            if other is not None:
                ratio = reactor.rate / other.rate
                verdict = "meets" if ratio >= target else "MISSES"
                print(f"reactor/{baseline:<12} {ratio:5.2f}x  (target >= {target}x: {verdict})")
        if ceiling is not None:
            print(
                f"reactor/{'create-only':<12} {reactor.rate / ceiling.rate:5.2f}x"
                "  (share of the no-transport ceiling)"
            )
    if ceiling is not None and len(results) > 1:
        # Per-event cost beyond what create-only spends: what moving the event costs.
        print("cost per event beyond create-only (the transport):")
        for result in results.values():
            if result is not ceiling:
                extra_us = (1 / result.rate - 1 / ceiling.rate) * 1e6
                print(f"  {result.name:<12} {extra_us:6.2f} us")
    return 0
