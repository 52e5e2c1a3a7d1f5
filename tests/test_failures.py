"""A failed event is not a crashed consumer (DESIGN.md, "supervision").

Each test runs with the settings a user gets by default, unless it says why not,
and against every backend where the behaviour is the channel's.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import pytest

import reactor
from reactor import Event, Topology
from reactor.actors.base import reactor_threads
from reactor.messages import lifecycle
from reactor.testing import Recorder, wait_for

TIMEOUT = 30.0


class Flaky:
    """Fails a fixed set of events always and another set on their first attempt only.

    Each outcome is a pure function of the event's number and attempt, so what must
    happen is known before the run. Thread-safety: every method takes the lock.
    """

    def __init__(self, always: set[int], once: set[int]) -> None:
        self.always = always
        self.once = once
        self.lock = threading.Lock()
        self.calls: collections.Counter[int] = collections.Counter()
        self.effects: collections.Counter[int] = collections.Counter()
        self.seen: list[tuple[int, int, str | None]] = []  # (n, attempt, previous error type)

    def __call__(self, event: Event) -> None:
        n = event.data["n"]
        delivery = reactor.current_delivery()
        previous = delivery.previous_error.type if delivery.previous_error else None
        with self.lock:
            self.calls[n] += 1
            self.seen.append((n, delivery.attempt, previous))
        if n in self.always or (n in self.once and delivery.attempt == 1):
            raise ConnectionError(f"#{n} failed on attempt {delivery.attempt}")
        with self.lock:
            self.effects[n] += 1


def test_poison_and_flaky_events_with_defaults_keep_the_system_running(backend: str) -> None:
    events = 2000
    always = set(range(7, events, 20))  # 5%
    once = set(range(13, events, 20))  # 5%
    flaky = Flaky(always, once)
    dead = Recorder()
    topo = Topology("defaults")
    topo.channel("work", backend=backend)
    topo.consumer("worker", flaky, channel="work", pattern="job.#", idempotent=True)
    topo.consumer("dlq", dead, channel="$system", pattern=lifecycle.DEADLETTER)
    states: set[str] = set()
    with topo.start() as system:
        for n in range(events):
            system.publish(
                "work", "job.run", {"n": n}, key=f"k{n % 47}"
            )  # poison spread over the keys
            states.add(system.state)
        wait_for(
            lambda: (states.add(system.state), system.is_idle())[1],
            TIMEOUT,
            message="the events were not all handled or dead-lettered",
        )
        wait_for(lambda: len(dead) == len(always), TIMEOUT, message="dead letters missing")
        metrics = system.metrics()
        assert system.state == "running"
    assert states == {"running"}
    letters = {letter.data["event"].data["n"]: letter.data for letter in dead.events}
    assert len(letters) == len(dead.events), "an event was dead-lettered twice"
    assert set(letters) == always
    for data in letters.values():
        assert (data["attempts"], data["error_type"], data["consumer"]) == (
            5,
            "ConnectionError",
            "worker",
        )
        assert "attempt 5" in data["message"]
    assert {n for n, c in flaky.effects.items() if c} == set(range(events)) - always
    assert max(flaky.effects.values()) == 1, "an event was handled twice"
    assert all(flaky.calls[n] == 5 for n in always)
    assert all(flaky.calls[n] == 2 for n in once)
    # The handler saw which attempt it was on, and why the previous one failed.
    retries = [(attempt, previous) for n, attempt, previous in flaky.seen if n in once]
    assert sorted(retries) == [(1, None)] * len(once) + [(2, "ConnectionError")] * len(once)
    worker = metrics.actor("worker")
    assert (worker.restarts, worker.failed) == (0, 0)
    assert worker.event_failures == 5 * len(always) + len(once)
    assert metrics.group("work", "worker").dead_lettered == len(always)


def test_later_events_of_a_key_wait_behind_a_retry_while_other_keys_flow() -> None:
    order: list[tuple[str, int]] = []
    failed = threading.Event()

    def handler(event: Event) -> None:
        key, n = event.key, event.data["n"]
        assert key is not None
        if (key, n) == ("a", 0) and reactor.current_delivery().attempt == 1:
            failed.set()
            raise TimeoutError("a/0 times out once")
        order.append((key, n))

    topo = Topology("keys")
    topo.channel("work")
    topo.consumer("worker", handler, channel="work", pattern="job.#", prefetch=4)
    with topo.start() as system:
        for n in range(10):
            for key in ("a", "b"):
                system.publish("work", "job.run", {"n": n}, key=key)
        system.wait_idle(TIMEOUT)
    assert failed.is_set()
    assert [n for key, n in order if key == "a"] == list(range(10))
    assert [n for key, n in order if key == "b"] == list(range(10))
    # b did not wait for a's retry (0.1 s away): all of b came before a's first event.
    assert order.index(("b", 9)) < order.index(("a", 0))


def test_current_delivery_outside_a_handler_names_the_mistake() -> None:
    with pytest.raises(reactor.NotInHandlerError, match="outside a consumer's handler"):
        reactor.current_delivery()


def test_a_dependency_that_is_down_is_waited_out_not_burned_into_dead_letters() -> None:
    down = threading.Event()
    down.set()
    handled: collections.Counter[int] = collections.Counter()
    calls = collections.Counter[str]()

    def handler(event: Event) -> None:
        calls["all"] += 1
        if down.is_set():
            raise ConnectionRefusedError("payments service is down")
        handled[event.data["n"]] += 1

    dead = Recorder()
    topo = Topology("outage")
    topo.channel("work")
    topo.consumer("worker", handler, channel="work", pattern="job.#")
    topo.consumer("dlq", dead, channel="$system", pattern=lifecycle.DEADLETTER)
    with topo.start() as system:
        for n in range(1000):
            system.publish("work", "job.run", {"n": n})
        wait_for(lambda: system.health().status == "degraded", TIMEOUT)
        (problem,) = system.health().problems
        assert "consumer 'worker'" in problem
        assert "ConnectionRefusedError: payments service is down" in problem
        # The outage lasts two seconds: time passing is what is under test here.
        threading.Event().wait(2.0)
        assert len(dead) < 50, f"{len(dead)} events burned into dead letters in 2 s"
        assert calls["all"] < 50
        assert system.state == "running"
        down.clear()
        system.wait_idle(TIMEOUT)
        assert system.health().ok
        assert system.state == "running"
    lost = [n for n in range(1000) if not handled[n]]
    dead_ns = sorted(letter.data["event"].data["n"] for letter in dead.events)
    assert lost == dead_ns
    assert max(handled.values()) == 1


def test_a_consumer_failing_everything_is_a_consumer_failure() -> None:
    # failure_threshold=3 (and no pause before a restart: the threshold is below the
    # pause): three failures in a row restart the consumer, and that restart counts.
    def handler(event: Event) -> None:
        raise RuntimeError("broken")

    topo = Topology("failing")
    topo.channel("work")
    topo.consumer("worker", handler, channel="work", pattern="job.#", failure_threshold=2)
    with topo.start() as system:
        for n in range(10):
            system.publish("work", "job.run", {"n": n})
        wait_for(lambda: system.metrics().actor("worker").restarts >= 2, TIMEOUT)
        failed = [e.data for e in system.recent_lifecycle(200) if e.topic == lifecycle.ACTOR_FAILED]
        assert failed[0]["error_type"] == "ConsumerFailing"
        assert "failed 2 new events in a row" in failed[0]["message"]
        assert system.state == "running"


def test_restart_backoff_resets_once_the_consumer_handles_events_again() -> None:
    # A consumer failure every few events, each after some success: backoff never grows.
    calls = collections.Counter[str]()

    def handler(event: Event) -> None:
        calls["n"] += 1
        if event.data["n"] % 5 == 4 and reactor.current_delivery().attempt == 1:
            raise RuntimeError("crash after progress")

    # Intensity high enough for 20 consumer failures: backoff is what is under test.
    topo = Topology("progress", strategy=reactor.OneForOne(max_restarts=100))
    topo.channel("work")
    topo.consumer(
        "worker", handler, channel="work", pattern="job.#", failure_threshold=1, prefetch=1
    )
    with topo.start() as system:
        started = time.monotonic()
        for n in range(100):
            system.publish("work", "job.run", {"n": n})
        system.wait_idle(TIMEOUT)
        assert system.metrics().actor("worker").restarts == 20
        restarted = [
            e.data for e in system.recent_lifecycle(500) if e.topic == lifecycle.ACTOR_RESTARTED
        ]
        assert {r["attempt"] for r in restarted} == {1}
        assert {r["backoff_s"] for r in restarted} == {0.0}
    # 20 retries at 0.1 s each, overlapping; a growing backoff would take 20 x 5 s.
    assert time.monotonic() - started < TIMEOUT


# -- nothing can loop or leak ---------------------------------------------------------------


def test_a_slow_system_subscriber_costs_counted_drops_never_a_feedback_loop() -> None:
    # $system holds 10,000 events and drops its oldest. Reports of drops elsewhere fill
    # it while its only subscriber is stuck; its own drops must be counted, not
    # reported on $system (each report would be dropped and reported in turn).
    release = threading.Event()
    topo = Topology("quiet")
    topo.channel("tiny", capacity=1, overflow="drop_newest")
    topo.consumer("stuck", lambda event: release.wait(TIMEOUT), channel="tiny", prefetch=1)
    topo.consumer(
        "watch",
        lambda event: release.wait(TIMEOUT),
        channel="$system",
        pattern="$system.#",
        prefetch=1,
    )
    with topo.start() as system:
        try:
            for _ in range(5):
                system.publish_many("tiny", [Event.create("t.x", n) for n in range(5_000)])

            def settled() -> bool:
                metrics = system.metrics()
                own = metrics.channel("$system")
                return (
                    metrics.actor("channel:$system").mailbox == 0
                    and own.published >= metrics.channel("tiny").dropped
                    # Publishers may overdraw it up to twice its capacity; its actor
                    # then evicts the oldest, in its own time.
                    and own.unsettled <= own.capacity
                )

            wait_for(settled, TIMEOUT, message="$system never took in the drop reports")
            metrics = system.metrics()
            reports = metrics.channel("tiny").dropped
            assert reports >= 24_000
            own = metrics.channel("$system")
            assert own.dropped >= reports - 10_000  # it overflowed, and counted it
            # Only the reports and a few lifecycle events: nothing fed itself.
            assert own.published <= reports + 100
            assert own.unsettled <= 2 * 10_000
        finally:
            release.set()


def test_a_system_subscriber_that_always_raises_cannot_take_the_system_down() -> None:
    # The subscriber fails every $system event, including the lifecycle events of its
    # own restarts and the dead letters of the work channel. With the default
    # settings the system keeps running and the work is all settled.
    def watch(event: Event) -> None:
        raise RuntimeError(f"cannot watch {event.topic}")

    def work(event: Event) -> None:
        if event.data % 10 == 0:
            raise ValueError("poison")

    topo = Topology("watched")
    topo.channel("work")
    topo.consumer("worker", work, channel="work")
    topo.consumer("watch", watch, channel="$system", pattern=("$system.#", "$deadletter"))
    with topo.start() as system:
        for n in range(100):
            system.publish("work", "job.run", n)
        wait_for(
            lambda: system.metrics().channel("work").dead_lettered == 10,
            TIMEOUT,
            message="the poison events were not dead-lettered",
        )
        watch_stats = system.metrics().group("$system", "watch")
        assert system.state == "running"
        assert system.metrics().channel("work").unsettled == 0
        assert watch_stats.delivered < 1_000  # paced, not a loop


def test_outputs_into_the_own_channel_stop_one_capacity_over_and_nothing_deadlocks() -> None:
    # Every event under generation 8 returns two children into its own channel, which
    # holds 20: the work grows faster than the channel can hold. Past one capacity
    # over, outputs are refused and their parent fails, to be retried later (and
    # dead-lettered if it never fits): memory stays bounded and the system settles.
    def split(event: Event) -> Any:
        generation = event.data
        if generation < 8:
            return [("tree.node", generation + 1), ("tree.node", generation + 1)]
        return None

    topo = Topology("tree")
    topo.channel("tree", capacity=20)
    topo.consumer("splitter", split, channel="tree")
    with topo.start() as system:
        system.publish("tree", "tree.node", 0)
        system.wait_idle(60)
        stats = system.metrics().channel("tree")
        assert system.state == "running"
    assert stats.peak_unsettled <= 2 * 20
    assert stats.acked + stats.dead_lettered == stats.published
    assert stats.acked > 20


def test_stop_wakes_a_publisher_blocked_on_a_full_channel() -> None:
    release = threading.Event()
    topo = Topology("full")
    topo.channel("c", capacity=1)
    topo.consumer("stuck", lambda event: release.wait(TIMEOUT), channel="c", prefetch=1)
    system = topo.start()
    outcome: list[BaseException | None] = []
    try:
        system.publish("c", "t.x", 0)
        wait_for(lambda: system.metrics().channel("c").unsettled == 1)

        def publisher() -> None:
            try:
                system.publish("c", "t.x", 1, timeout=60)
                outcome.append(None)
            except BaseException as exc:  # what it raises is what is under test
                outcome.append(exc)

        thread = threading.Thread(target=publisher, name="test-blocked-publisher")
        thread.start()
        wait_for(lambda: system.metrics().channel("c").unsettled == 1 and thread.is_alive())
        release.set()  # the stuck handler returns; the drain may or may not take event 1
        system.stop(timeout=5, drain=False)
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the publisher was still blocked after stop() returned"
    finally:
        release.set()
        system.stop(timeout=5)
    (result,) = outcome
    assert result is None or isinstance(result, reactor.SystemStoppedError)


def test_a_drain_deadline_reports_what_it_abandoned(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    topo = Topology("abandon")
    topo.channel("c")
    topo.consumer("slow", lambda event: release.wait(TIMEOUT), channel="c", prefetch=1)
    system = topo.start()
    try:
        for n in range(5):
            system.publish("c", "t.x", n)
        wait_for(lambda: system.metrics().channel("c").in_flight == 1)
        with caplog.at_level("WARNING", logger="reactor"):
            system.stop(timeout=1.0)
    finally:
        release.set()
    # The handler still running at the deadline was abandoned, and the actors stopping
    # after it with it: let their threads end.
    wait_for(lambda: not reactor_threads(), TIMEOUT)
    (record,) = [r for r in caplog.records if "drain deadline passed" in r.getMessage()]
    assert "5 events of channel 'c'" in record.getMessage()
    assert (record.reactor_channel, record.reactor_consumer) == ("c", "slow")  # type: ignore[attr-defined]
    (report,) = [e for e in system.recent_lifecycle(200) if e.topic == lifecycle.DRAIN_ABANDONED]
    assert (report.data["channel"], report.data["group"], report.data["events"]) == ("c", "slow", 5)


def test_failures_restarts_and_escalations_are_logged_with_who_and_what(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(event: Event) -> None:
        raise RuntimeError("always")

    topo = Topology("logged", strategy=reactor.OneForOne(max_restarts=0))
    topo.channel("work")
    with topo.supervisor("inner", strategy=reactor.OneForOne(max_restarts=1)) as inner:
        inner.consumer("worker", handler, channel="work", failure_threshold=1)
    with caplog.at_level("WARNING", logger="reactor"):
        system = topo.start()
        try:
            ids = [system.publish("work", "job.run", n).id for n in range(3)]
            with pytest.raises(reactor.SupervisorEscalation):
                system.wait(timeout=TIMEOUT)
        finally:
            system.stop(timeout=5)
    records = [r for r in caplog.records if r.name == "reactor"]
    failed = [r for r in records if "failed on attempt" in r.getMessage()]
    assert failed, "no event failure was logged"
    assert all(r.levelname == "WARNING" for r in failed)
    first = failed[0]
    assert (first.reactor_actor, first.reactor_channel) == ("worker", "work")  # type: ignore[attr-defined]
    assert first.reactor_event_id in ids  # type: ignore[attr-defined]
    crashed = [r for r in records if "consumer 'worker' failed (crash)" in r.getMessage()]
    assert crashed
    assert crashed[0].reactor_supervisor == "inner"  # type: ignore[attr-defined]
    assert any("restarts 'worker'" in r.getMessage() for r in records)
    gave_up = [r for r in records if "and gives up" in r.getMessage()]
    assert [(r.levelname, r.reactor_actor) for r in gave_up][:1] == [("ERROR", "inner")]  # type: ignore[attr-defined]
