"""Batch consumers (runtime/batching.py): handle_batch(events), as Broadway's batchers.

Each failure is a pure function of the event and of how often the handler saw it,
so what must happen is known before the run; tests where delivery is the
channel's run on every backend.
"""

from __future__ import annotations

import collections
import io
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support import HangOnce

import reactor
from reactor import BatchFailed, Event, Topology
from reactor.faces.dashboard import Dashboard
from reactor.messages import lifecycle
from reactor.testing import FakeClock, Recorder, wait_for

TIMEOUT = 30.0


class Batches:
    """A batch handler that records each batch it is given, as lists of event numbers.

    Thread-safety: the lock guards everything (pool members share one).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[list[Event]] = []

    def __call__(self, events: list[Event]) -> None:
        with self.lock:
            self.batches.append(list(events))

    def numbers(self) -> list[list[int]]:
        with self.lock:
            return [[event.data["n"] for event in batch] for batch in self.batches]


def _publish(system: reactor.System, count: int, **extra: Any) -> None:
    for n in range(count):
        key = extra.get("key")
        system.publish(
            "work",
            "job.run",
            {"n": n, "region": ("eu", "us", "ap")[n % 3]},
            key=key(n) if key else None,
        )


def test_full_batches_in_order_and_each_acked_as_a_whole(backend: str) -> None:
    handler = Batches()
    topo = Topology("batches")
    topo.channel("work", backend=backend)
    # The timeout is far off: every batch here is handled because it is full.
    topo.consumer("sink", handler, channel="work", batch_size=25, batch_timeout=600)
    with topo.start() as system:
        _publish(system, 500)
        system.wait_idle(TIMEOUT)  # idle: every event acked
        metrics = system.metrics()
    batches = handler.numbers()
    assert [len(batch) for batch in batches] == [25] * 20
    assert [n for batch in batches for n in batch] == list(range(500))
    sink = metrics.actor("sink")
    assert (sink.handled, sink.batches, sink.event_failures) == (500, 20, 0)
    assert metrics.group("work", "sink").acked == 500


def test_batch_timeout_handles_a_partial_batch_on_the_actors_clock() -> None:
    clock = FakeClock()
    handler = Batches()
    topo = Topology("timeout")
    topo.channel("work")
    topo.consumer("sink", handler, channel="work", batch_size=10, batch_timeout=5.0)
    with topo.start(clock=clock) as system:
        before = clock.pending()
        _publish(system, 13)
        wait_for(lambda: handler.numbers() == [list(range(10))], TIMEOUT)
        assert clock.wait_for_timers(before + 1, TIMEOUT), "no timer for the partial batch"
        clock.advance(4.9)
        assert not system.is_idle()  # three events wait in the open batch, unacked
        assert handler.numbers() == [list(range(10))]
        clock.advance(0.1)
        wait_for(lambda: len(handler.numbers()) == 2, TIMEOUT)
        system.wait_idle(TIMEOUT)
    assert handler.numbers() == [list(range(10)), [10, 11, 12]]


def test_batches_filled_by_size_arm_one_timer_not_one_each() -> None:
    clock = FakeClock()
    handler = Batches()
    topo = Topology("timers")
    topo.channel("work")
    topo.consumer("sink", handler, channel="work", batch_size=10, batch_timeout=5.0)
    with topo.start(clock=clock) as system:
        before = clock.pending()
        _publish(system, 1000)
        system.wait_idle(TIMEOUT)
        assert clock.pending() - before <= 1
    assert len(handler.numbers()) == 100


def test_a_batch_key_makes_batches_of_one_value_and_keeps_each_keys_order(backend: str) -> None:
    handler = Batches()
    topo = Topology("keys")
    topo.channel("work", backend=backend)
    topo.consumer(
        "sink",
        handler,
        channel="work",
        batch_size=8,
        batch_timeout=0.05,
        batch_key="region",
    )
    with topo.start() as system:
        # Event key k<n % 4> meets every region in turn: batches of other regions hold
        # earlier events of its key, and must go first.
        _publish(system, 600, key=lambda n: f"k{n % 4}")
        system.wait_idle(TIMEOUT)
    batches = handler.numbers()
    assert sorted(n for batch in batches for n in batch) == list(range(600))
    for batch in batches:
        assert len({n % 3 for n in batch}) == 1, f"a batch mixes regions: {batch}"
        assert len(batch) <= 8
    handled = [n for batch in batches for n in batch]
    for key in range(4):
        of_key = [n for n in handled if n % 4 == key]
        assert of_key == sorted(of_key), f"key k{key} handled out of order"


def test_a_raising_batch_handler_fails_each_event_which_is_retried_in_key_order(
    backend: str,
) -> None:
    handled: list[int] = []
    first: list[Event] = []
    lock = threading.Lock()

    def handler(events: list[Event]) -> None:
        with lock:
            if not first:
                first.extend(events)
                raise ConnectionError("the warehouse is down for one batch")
            handled.extend(event.data["n"] for event in events)

    dead = Recorder()
    topo = Topology("whole")
    topo.channel("work", backend=backend)
    topo.consumer("sink", handler, channel="work", batch_size=10, batch_timeout=0.05)
    topo.consumer("dlq", dead, channel="$system", pattern=lifecycle.DEADLETTER)
    with topo.start() as system:
        _publish(system, 40, key=lambda n: f"k{n % 3}")
        system.wait_idle(TIMEOUT)
        metrics = system.metrics()
    assert sorted(handled) == list(range(40))
    assert len(dead) == 0
    sink = metrics.actor("sink")
    # Only the first event of each key in the failed batch spent an attempt; its key's
    # later events in that batch were given back, to come after its retry.
    assert sink.event_failures == len({event.key for event in first})
    assert (sink.restarts, sink.failed) == (0, 0)
    for key in range(3):
        of_key = [n for n in handled if n % 3 == key]
        assert of_key == sorted(of_key), f"key k{key} handled out of order"


class Partial:
    """Fails some events of each batch with BatchFailed, as a pure function of the event.

    Events in ``always`` fail every time, events in ``once`` the first time the
    handler sees them. As the contract asks, once an event of a key fails, the
    batch's later events of that key are left alone (they come again).
    """

    def __init__(self, always: set[int], once: set[int]) -> None:
        self.always = always
        self.once = once
        self.lock = threading.Lock()
        self.seen: collections.Counter[int] = collections.Counter()
        self.effects: list[int] = []

    def __call__(self, events: list[Event]) -> None:
        failed: dict[str, Exception] = {}
        failed_keys: set[str | None] = set()
        with self.lock:
            for event in events:
                n = event.data["n"]
                if event.key in failed_keys:
                    continue  # it comes again
                self.seen[n] += 1
                if n in self.always or (n in self.once and self.seen[n] == 1):
                    failed[event.id] = ValueError(f"#{n} refused")
                    failed_keys.add(event.key)
                    continue
                self.effects.append(n)
        if failed:
            raise BatchFailed(failed)


def test_batch_failed_fails_only_its_events_under_the_failure_rules(backend: str) -> None:
    events = 300
    always = set(range(7, events, 50))
    once = set(range(13, events, 20))
    handler = Partial(always, once)
    dead = Recorder()
    topo = Topology("partial")
    topo.channel("work", backend=backend)
    topo.consumer(
        "sink",
        handler,
        channel="work",
        batch_size=20,
        batch_timeout=0.02,
        # Short retries keep the test quick; a retry's delay must still outlast the time
        # the consumer takes to give back its key's later events on a loaded machine (the
        # channel lifts a key's hold when its retry falls due, see batching.py).
        retry=reactor.Retry(min_s=0.2, max_s=0.4),
    )
    topo.consumer("dlq", dead, channel="$system", pattern=lifecycle.DEADLETTER)
    with topo.start() as system:
        _publish(system, events, key=lambda n: f"k{n % 7}")
        wait_for(system.is_idle, TIMEOUT, message="events neither handled nor dead-lettered")
        wait_for(lambda: len(dead) == len(always), TIMEOUT, message="dead letters missing")
        metrics = system.metrics()
    letters = {letter.data["event"].data["n"]: letter.data for letter in dead.events}
    assert set(letters) == always
    for data in letters.values():
        assert (data["attempts"], data["error_type"], data["consumer"]) == (5, "ValueError", "sink")
        assert "refused" in data["message"]
    assert sorted(handler.effects) == sorted(set(range(events)) - always), "lost or twice"
    for key in range(7):
        of_key = [n for n in handler.effects if n % 7 == key]
        assert of_key == sorted(of_key), f"key k{key} handled out of order"
    sink = metrics.actor("sink")
    assert sink.event_failures == 5 * len(always) + len(once)
    assert (sink.restarts, sink.failed) == (0, 0)


def test_batches_failing_in_a_row_are_a_consumer_failure() -> None:
    calls = collections.Counter[str]()

    def handler(events: list[Event]) -> None:
        calls["batches"] += 1
        if calls["batches"] <= 2:
            raise RuntimeError("broken")

    topo = Topology("failing")
    topo.channel("work")
    topo.consumer(
        "sink", handler, channel="work", batch_size=5, batch_timeout=0.05, failure_threshold=2
    )
    with topo.start() as system:
        # In one message: two batches of new events, whatever the machine's load.
        system.publish_many("work", [Event.create("job.run", {"n": n}) for n in range(10)])
        system.wait_idle(TIMEOUT)
        failed = [e.data for e in system.recent_lifecycle(200) if e.topic == lifecycle.ACTOR_FAILED]
        sink = system.metrics().actor("sink")
    assert [data["error_type"] for data in failed] == ["ConsumerFailing"]
    assert "failed 2 new batches in a row" in failed[0]["message"]
    assert (sink.restarts, sink.handled, sink.event_failures) == (1, 10, 10)


def test_a_batch_handlers_events_are_published_before_its_batch_is_acked(backend: str) -> None:
    class Bill:
        started = 0

        def on_start(self) -> None:
            Bill.started += 1

        def handle_batch(self, events: Sequence[Event]) -> list[Event]:
            return [event.derive("job.billed", {"n": event.data["n"]}) for event in events]

    billed = Recorder()
    topo = Topology("outputs")
    topo.channel("work", backend=backend)
    topo.channel("billed")
    topo.consumer(
        "bill",
        Bill,
        channel="work",
        pattern="job.run",
        output="billed",
        batch_size=16,
        batch_timeout=0.05,
    )
    topo.consumer("audit", billed, channel="billed")
    with topo.start() as system:
        _publish(system, 100)
        system.wait_idle(TIMEOUT)
    assert Bill.started == 1
    assert sorted(event.data["n"] for event in billed.events) == list(range(100))
    assert all(event.causation_id is not None for event in billed.events)


def test_a_pair_returned_by_a_batch_handler_fails_the_batch_with_one_line() -> None:
    dead = Recorder()
    topo = Topology("pairs")
    topo.channel("work")
    topo.consumer(
        "sink",
        lambda events: ("job.done", {}),
        channel="work",
        batch_size=2,
        batch_timeout=0.01,
        max_deliveries=1,
    )
    topo.consumer("dlq", dead, channel="$system", pattern=lifecycle.DEADLETTER)
    with topo.start() as system:
        _publish(system, 2)
        dead.wait_for_count(2, TIMEOUT)
    message = dead.events[0].data["message"]
    assert dead.events[0].data["error_type"] == "ResultError"
    assert "batch handler of consumer 'sink' returned tuple" in message
    assert "event.derive(topic, data)" in message


def test_a_pool_of_batch_consumers_handles_everything_once() -> None:
    handler = Batches()
    topo = Topology("pool")
    topo.channel("work")
    topo.pool(
        "sinks",
        handler,
        channel="work",
        batch_size=10,
        batch_timeout=0.05,
        min_size=3,
        max_size=3,
    )
    with topo.start() as system:
        _publish(system, 300, key=lambda n: f"k{n % 11}")
        system.wait_idle(TIMEOUT)
        metrics = system.metrics()
    assert sorted(n for batch in handler.numbers() for n in batch) == list(range(300))
    members = [actor for actor in metrics.actors if actor.kind == "member"]
    assert sum(member.batches for member in members) == len(handler.numbers())


def test_an_idempotent_batch_consumer_skips_ids_it_handled(backend: str) -> None:
    handler = Batches()
    topo = Topology("dedup")
    topo.channel("work", backend=backend)
    topo.consumer(
        "sink", handler, channel="work", batch_size=4, batch_timeout=0.01, idempotent=True
    )
    with topo.start() as system:
        events = [Event.create("job.run", {"n": n}) for n in range(8)]
        system.publish_many("work", events)
        system.wait_idle(TIMEOUT)
        system.publish_many("work", events[2:6])
        system.wait_idle(TIMEOUT)
    assert sorted(n for batch in handler.numbers() for n in batch) == list(range(8))


# -- declarations ------------------------------------------------------------------------


class OnlyHandle:
    def handle(self, event: Event) -> None: ...


class OnlyBatch:
    def handle_batch(self, events: list[Event]) -> None: ...


@pytest.mark.parametrize(
    ("handler", "options", "problem"),
    [
        (
            print,
            {"batch_size": 300},
            "consumer 'sink': batch_size=300 is more than prefetch=256, so a batch could "
            "never fill; raise prefetch or lower batch_size",
        ),
        (
            OnlyHandle,
            {"batch_size": 10},
            "consumer 'sink': batch_size is set but handler OnlyHandle has handle(event) and no "
            "handle_batch(events); add handle_batch, or drop batch_size",
        ),
        (
            OnlyBatch,
            {},
            "consumer 'sink': handler OnlyBatch has handle_batch(events) but batch_size is not "
            "set; set batch_size",
        ),
        (
            print,
            {"batch_key": "region"},
            "consumer 'sink': batch_key is set but batch_size is not; set batch_size to batch "
            "events",
        ),
        (print, {"batch_size": 0}, "consumer 'sink': batch_size must be a positive integer, got 0"),
        (
            print,
            {"batch_size": 10, "batch_timeout": float("nan")},
            "consumer 'sink': batch_timeout must be a positive number of seconds, at most 3600, "
            "got nan",
        ),
        (
            print,
            {"batch_size": 10, "batch_key": 3},
            "consumer 'sink': batch_key must be a callable or a field name, got int",
        ),
    ],
)
def test_batch_options_are_checked_with_the_topology(
    handler: Any, options: dict[str, Any], problem: str
) -> None:
    topo = Topology("checked")
    topo.channel("work")
    topo.consumer("sink", handler, channel="work", **options)
    with pytest.raises(reactor.TopologyError) as caught:
        topo.validate()
    assert caught.value.problems == (problem,)


def test_a_topology_file_declares_a_batch_consumer(tmp_path: Any) -> None:
    (tmp_path / "batch_handlers.py").write_text(
        "def store(events):\n    return None\n", encoding="utf-8"
    )
    path = tmp_path / "shop.toml"
    path.write_text(
        "[channels.work]\n\n[consumers.store]\nchannel = 'work'\n"
        "handler = 'batch_handlers:store'\nbatch_size = 50\nbatch_timeout = 0.5\n"
        "batch_key = 'region'\n",
        encoding="utf-8",
    )
    (decl,) = Topology.from_toml(path).consumers()
    assert (decl.batch_size, decl.batch_timeout, decl.batch_key) == (50, 0.5, "region")
    path.write_text(
        "[channels.work]\n\n[consumers.store]\nchannel = 'work'\n"
        "handler = 'batch_handlers:store'\nbatch_size = 'many'\n",
        encoding="utf-8",
    )
    with pytest.raises(reactor.TopologyError, match="batch_size must be an integer"):
        Topology.from_toml(path)


def test_the_dashboard_shows_a_batch_consumers_mean_batch_size() -> None:
    topo = Topology("dash")
    topo.channel("work")
    topo.consumer("sink", Batches(), channel="work", batch_size=10, batch_timeout=600)
    topo.consumer("plain", lambda event: None, channel="work")
    with topo.start() as system:
        _publish(system, 40)
        system.wait_idle(TIMEOUT)
        metrics = system.metrics()
        console = Console(record=True, width=120, file=io.StringIO(), color_system=None)
        console.print(Dashboard(system).render(metrics))
    rows = {
        line.split()[0]: line.split() for line in console.export_text().splitlines() if line.split()
    }
    # events handled, failed, restarts, mean batch size
    assert rows["sink"][-4:] == ["40", "0", "0", "10"]
    assert rows["plain"][-3:] == ["40", "0", "0"]  # not a batch consumer: no batch size


def test_the_readme_batch_example_runs() -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    match = re.search(r"### Batch consumers\n.*?```python\n(.*?)```", readme.read_text(), re.S)
    assert match, "README.md lost its batch consumer example"
    exec(compile(match.group(1), str(readme), "exec"), {})  # our own README, run as documentation


def test_a_hung_batch_handler_is_abandoned_and_its_batch_comes_again() -> None:
    calls = collections.Counter[str]()
    returned: list[int] = []
    lock = threading.Lock()
    hang = HangOnce("first", timeout=TIMEOUT)

    def handler(events: list[Event]) -> None:
        with lock:
            calls["batches"] += 1
            first = calls["batches"] == 1
        if hang("first" if first else "later"):
            return  # the late return of an abandoned incarnation: it must change nothing
        with lock:
            returned.extend(event.data["n"] for event in events)

    topo = Topology("hung")
    topo.channel("work")
    topo.consumer(
        "sink", handler, channel="work", batch_size=10, batch_timeout=0.05, handler_timeout=0.3
    )
    # The hang is let go before the system stops, so no thread outlives the test.
    with topo.start() as system, hang:
        system.publish_many("work", [Event.create("job.run", {"n": n}) for n in range(30)])
        assert hang.entered.wait(TIMEOUT)
        wait_for(lambda: len(returned) == 30, TIMEOUT, message="the batch did not come again")
        system.wait_idle(TIMEOUT)
        sink = system.metrics().actor("sink")
    assert sorted(returned) == list(range(30))
    assert sink.restarts == 1


def test_a_stop_with_a_partial_batch_open_finishes_and_reports_what_it_left() -> None:
    handler = Batches()
    topo = Topology("stop")
    topo.channel("work")
    topo.consumer("sink", handler, channel="work", batch_size=10, batch_timeout=600)
    system = topo.start()
    try:
        _publish(system, 3)
        wait_for(lambda: system.metrics().actor("sink").received == 3, TIMEOUT)
    finally:
        system.stop(timeout=2.0)  # the drain gives up long before the batch is due
    assert system.state == "stopped"
    assert handler.numbers() == []  # a partial batch waits its timeout, past the drain
    (report,) = [e for e in system.recent_lifecycle(200) if e.topic == lifecycle.DRAIN_ABANDONED]
    assert (report.data["channel"], report.data["group"], report.data["events"]) == (
        "work",
        "sink",
        3,
    )


def test_current_delivery_in_a_batch_handler_says_a_batch_has_none() -> None:
    messages: list[str] = []

    def handler(events: list[Event]) -> None:
        try:
            reactor.current_delivery()
        except reactor.NotInHandlerError as exc:
            messages.append(str(exc))

    topo = Topology("delivery")
    topo.channel("work")
    topo.consumer("sink", handler, channel="work", batch_size=2, batch_timeout=0.01)
    with topo.start() as system:
        _publish(system, 2)
        system.wait_idle(TIMEOUT)
    (message,) = messages
    assert "a batch handler's events have no single delivery" in message


def test_a_batch_key_that_raises_fails_that_event_only() -> None:
    handler = Batches()
    dead = Recorder()
    topo = Topology("badkey")
    topo.channel("work")
    topo.consumer(
        "sink",
        handler,
        channel="work",
        batch_size=5,
        batch_timeout=0.01,
        batch_key=lambda event: 10 // event.data["n"],  # event 0 has no batch key
        max_deliveries=1,
    )
    topo.consumer("dlq", dead, channel="$system", pattern=lifecycle.DEADLETTER)
    with topo.start() as system:
        _publish(system, 20)
        dead.wait_for_count(1, TIMEOUT)
        system.wait_idle(TIMEOUT)
    (letter,) = dead.events
    assert (letter.data["event"].data["n"], letter.data["error_type"]) == (0, "ZeroDivisionError")
    assert sorted(n for batch in handler.numbers() for n in batch) == list(range(1, 20))
    for batch in handler.numbers():
        assert len({10 // n for n in batch}) == 1


def test_an_async_batch_handler_is_refused_with_one_line() -> None:
    async def store(events: list[Event]) -> None: ...

    topo = Topology("async")
    topo.channel("work")
    topo.consumer("sink", store, channel="work", batch_size=10)
    with pytest.raises(reactor.TopologyError) as caught:
        topo.validate()
    assert caught.value.problems == (
        "consumer 'sink': batch_size is set but handler store is `async def`; batch handlers "
        "run in the consumer's thread: make handle_batch a plain function",
    )


def test_chaos_around_a_batch_handler_is_refused_with_one_line() -> None:
    topo = Topology("chaos")
    topo.channel("work")
    topo.consumer("sink", print, channel="work", batch_size=10, chaos=reactor.Chaos())
    with pytest.raises(reactor.TopologyError) as caught:
        topo.validate()
    assert caught.value.problems == (
        "consumer 'sink': chaos wraps one-event handlers only; drop chaos or batch_size",
    )
