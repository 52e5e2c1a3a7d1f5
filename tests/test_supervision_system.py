"""Supervision inside a running system: consumers, channels, ``$system`` and escalation.

Where time matters (the hung-handler watchdog) the system runs on a
:class:`FakeClock`; elsewhere backoff is zero so restarts are immediate, and
every wait is on a condition with a timeout, never a sleep.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from support import HangOnce

from reactor import Backoff, Event, OneForOne, Retry, SupervisorEscalation, System, Topology
from reactor.messages import lifecycle
from reactor.testing import FakeClock, Recorder, wait_for

TIMEOUT = 10.0
NO_BACKOFF = Backoff(min_s=0, max_s=0, jitter=0)
NO_DELAY = Retry(min_s=0, max_s=0, jitter=0)  # a failed event is retried at once


def group_stats(system: System, channel: str, group: str) -> Any:
    return system.metrics().group(channel, group)


def thread_alive(name: str) -> bool:
    return any(t.name == name and t.is_alive() for t in threading.enumerate())


def advance_until_abandoned(fake: FakeClock, system: System, consumer: str) -> None:
    """Walk the fake clock in watchdog periods until the watchdog abandons ``consumer``.

    After each step, wait until the supervisor re-armed its watchdog: it does so
    right after a look, so by then the look (and any abandonment) has happened.
    """
    assert fake.wait_for_timers(1, TIMEOUT), "no watchdog armed"
    for _ in range(40):
        fake.advance(0.25)
        assert fake.wait_for_timers(1, TIMEOUT), "the watchdog was not re-armed"
        if system.metrics().actor(consumer).restarts:
            return
    pytest.fail(f"the watchdog never abandoned {consumer}")


# -- 5. hung handler --------------------------------------------------------------------


class IncarnationProbe:
    """Watches handler calls to prove no two incarnations handle events at once.

    A consumer's handler class is instantiated afresh by every incarnation, in its
    ``on_start``, which runs only after the supervisor fenced the previous one. So:

    * a call that *begins* in an incarnation older than the newest one is a fenced
      incarnation still taking events: a violation;
    * a call that began before a newer incarnation existed and is still running is
      the abandoned one, excluded from the concurrency count (a thread cannot be
      killed; DESIGN.md documents that it is left to finish and ignored).

    Thread-safety: every method takes the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.newest = 0
        self.active: collections.Counter[int] = collections.Counter()
        self.max_live = 0
        self.violations: list[str] = []
        self.calls: list[tuple[int, int]] = []  # (incarnation, event n), at call start

    def new_incarnation(self) -> int:
        with self._lock:
            self.newest += 1
            return self.newest

    @contextmanager
    def call(self, incarnation: int, n: int) -> Iterator[None]:
        with self._lock:
            if incarnation < self.newest:
                self.violations.append(
                    f"incarnation {incarnation} began #{n} after incarnation {self.newest} started"
                )
            self.calls.append((incarnation, n))
            self.active[incarnation] += 1
            # Calls of superseded incarnations are abandoned ones: not counted.
            self.max_live = max(self.max_live, self.active[self.newest])
        try:
            yield
        finally:
            with self._lock:
                self.active[incarnation] -= 1


def test_hung_handler_is_abandoned_and_its_late_result_ignored() -> None:
    events = 20
    fake = FakeClock()
    probe = IncarnationProbe()
    hang = HangOnce((1, 0), timeout=TIMEOUT)  # incarnation 1 hangs on #0
    handled: list[tuple[int, int]] = []  # (incarnation, n) of every call that returned

    class Handler:
        def __init__(self) -> None:
            self.incarnation = probe.new_incarnation()

        def handle(self, event: Event) -> None:
            n = event.data["n"]
            with probe.call(self.incarnation, n):
                hang((self.incarnation, n))
                handled.append((self.incarnation, n))

    topo = Topology("hung")
    topo.channel("work")
    topo.consumer(
        "slow", Handler, channel="work", pattern="job.#", handler_timeout=1.0, retry=NO_DELAY
    )
    with topo.start(clock=fake) as system, hang:
        for n in range(events):
            system.publish("work", "job.run", {"n": n})
        assert hang.entered.wait(TIMEOUT)

        advance_until_abandoned(fake, system, "slow")
        # The watchdog looks every timeout / 4 and abandons strictly past the timeout.
        assert fake.monotonic() - 1000.0 == 1.25

        # A new incarnation handles every event, #0 included (its second attempt),
        # while the first is still stuck in its handler.
        wait_for(lambda: {n for inc, n in handled if inc == 2} == set(range(events)), TIMEOUT)
        assert thread_alive("reactor:slow#1")
        stats = group_stats(system, "work", "slow")
        assert (stats.nacked, stats.redelivered) == (1, 1)  # #0: attempt 1 failed (timed out)

        # Let the abandoned call finish: its late result must change nothing.
        hang.release.set()
        wait_for(lambda: not thread_alive("reactor:slow#1"), TIMEOUT)
        # One more event, queued in the channel behind anything the old one could have
        # sent: once it is acked, every late message has been seen and ignored.
        system.publish("work", "job.run", {"n": events})
        system.wait_idle(TIMEOUT)
        stats = group_stats(system, "work", "slow")
        assert stats.acked == events + 1  # each event once: no late ack counted
        assert (stats.nacked, stats.redelivered, stats.dead_lettered) == (1, 1, 0)

        assert probe.violations == []
        assert probe.max_live == 1
        assert sorted(n for inc, n in handled if inc == 1) == [0]  # returned late, ignored
        assert system.metrics().actor("slow").state == "running"
        failed = [e for e in system.recent_lifecycle(200) if e.topic == lifecycle.ACTOR_FAILED]
        assert [(e.data["actor"], e.data["error_type"], e.data["reason"]) for e in failed] == [
            ("slow", "HandlerTimeout", "timeout")
        ]


# -- 6. no event lost, no side effect twice -----------------------------------------------


def test_idempotent_consumer_has_one_side_effect_per_event_despite_redelivery() -> None:
    # The handler hangs on #3 of a batch after handling #0..#2. Abandoning it fences
    # the incarnation, so #0..#2 are never acked and the channel redelivers them; with
    # idempotent=True the new incarnation skips them instead of handling them again.
    fake = FakeClock()
    effects: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    hang = HangOnce(3, timeout=TIMEOUT)

    def handler(event: Event) -> None:
        n = event.data["n"]
        if hang(n):
            return  # the stuck call never did its work; the retry does
        with lock:
            effects[n] += 1

    topo = Topology("dedup")
    topo.channel("work")
    topo.consumer(
        "once",
        handler,
        channel="work",
        pattern="job.#",
        handler_timeout=1.0,
        idempotent=True,
        retry=NO_DELAY,
    )
    with topo.start(clock=fake) as system, hang:
        for n in range(10):
            system.publish("work", "job.run", {"n": n})
        assert hang.entered.wait(TIMEOUT)
        advance_until_abandoned(fake, system, "once")
        wait_for(lambda: sum(effects.values()) == 10, TIMEOUT)
        hang.release.set()
        system.wait_idle(TIMEOUT)
        stats = group_stats(system, "work", "once")
        # #0..#2 were delivered twice (redelivered after the fence) but handled once.
        assert stats.delivered > 10
        assert stats.acked == 10
    assert effects == {n: 1 for n in range(10)}
    assert hang.calls == {**{n: 1 for n in range(10)}, 3: 2}


def test_failing_events_lose_nothing_restart_nothing_and_senders_never_notice() -> None:
    # Every 50th event fails on its first attempt, with the default settings. Publishing
    # goes on from another thread throughout: no publish fails, every event is handled,
    # and the consumer is never restarted: a failed event is not a failed consumer.
    attempts: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    seen = Recorder()

    def handler(event: Event) -> None:
        n = event.data["n"]
        with lock:
            attempts[n] += 1
            first = attempts[n] == 1
        if n % 50 == 0 and first:
            raise RuntimeError(f"#{n} fails on its first attempt")
        seen(event)

    topo = Topology("steady")
    topo.channel("work", capacity=64)
    topo.consumer("flaky", handler, channel="work", pattern="job.#", prefetch=8)
    errors: list[BaseException] = []
    with topo.start() as system:

        def publisher() -> None:
            try:
                for n in range(1000):
                    system.publish("work", "job.run", {"n": n}, timeout=TIMEOUT)
            except BaseException as exc:  # any error is the failure under test
                errors.append(exc)

        thread = threading.Thread(target=publisher, name="test-publisher")
        thread.start()
        thread.join(TIMEOUT * 3)
        assert not thread.is_alive()
        system.wait_idle(TIMEOUT)
        assert errors == []
        assert sorted(e.data["n"] for e in seen.events) == list(range(1000))
        flaky = system.metrics().actor("flaky")
        assert (flaky.restarts, flaky.failed, flaky.event_failures) == (0, 0, 20)
        assert system.metrics().channel("work").dead_lettered == 0
        assert attempts == {n: 2 if n % 50 == 0 else 1 for n in range(1000)}


# -- 7. lifecycle events -------------------------------------------------------------------


def test_lifecycle_events_on_system_channel_and_metrics() -> None:
    attempts: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def flaky(event: Event) -> None:
        n = event.data["n"]
        with lock:
            attempts[n] += 1
            first = attempts[n] == 1
        if n in (1, 2) and first:
            raise ValueError(f"bad luck on #{n}")

    watched = Recorder()
    topo = Topology("observed", strategy=OneForOne(max_restarts=10, backoff=NO_BACKOFF))
    topo.channel("work")
    topo.consumer("watch", watched, channel="$system", pattern="$system.#")
    # inner tolerates one restart: #1 restarts flaky, #2 makes inner give up, and
    # the topology root ($consumers) restarts inner.
    with topo.supervisor("inner", strategy=OneForOne(max_restarts=1, backoff=NO_BACKOFF)) as inner:
        # failure_threshold=1: every failed event is also a consumer failure (restarted).
        inner.consumer(
            "flaky",
            flaky,
            channel="work",
            pattern="job.#",
            prefetch=1,
            failure_threshold=1,
            retry=NO_DELAY,
        )
    fake = FakeClock()
    with topo.start(clock=fake) as system:
        for n in range(5):
            system.publish("work", "job.run", {"n": n})
        system.wait_idle(TIMEOUT)

        def of(topic: str, actor: str) -> list[dict[str, Any]]:
            return [
                dict(e.data)
                for e in list(watched.events)
                if e.topic == topic and e.data["actor"] == actor
            ]

        wait_for(
            lambda: (
                of(lifecycle.ACTOR_STARTED, "inner")
                and len(of(lifecycle.ACTOR_STARTED, "flaky")) == 3
            )
        )
        started = of(lifecycle.ACTOR_STARTED, "flaky")
        # 1: first start; 2: restart by inner; 1 again: a fresh inner starts it afresh.
        assert [s["incarnation"] for s in started] == [1, 2, 1]
        assert {(s["kind"], s["supervisor"]) for s in started} == {("consumer", "inner")}

        failed = of(lifecycle.ACTOR_FAILED, "flaky")
        assert [(f["error_type"], f["reason"]) for f in failed] == [
            ("ConsumerFailing", "crash"),
            ("ConsumerFailing", "crash"),
        ]
        assert "ValueError: bad luck on #1" in failed[0]["message"]
        assert "ValueError: bad luck on #2" in failed[1]["message"]
        (restarted,) = of(lifecycle.ACTOR_RESTARTED, "flaky")
        assert (restarted["attempt"], restarted["backoff_s"], restarted["incarnation"]) == (
            1,
            0.0,
            2,
        )

        (escalated,) = of(lifecycle.SUPERVISOR_ESCALATED, "inner")
        assert escalated["chain"] == ("inner",)
        assert escalated["error_type"] == "ConsumerFailing"
        assert "bad luck on #2" in escalated["message"]
        (inner_failed,) = of(lifecycle.ACTOR_FAILED, "inner")
        assert inner_failed["error_type"] == "SupervisorEscalation"
        assert inner_failed["supervisor"] == "$consumers"
        (inner_restarted,) = of(lifecycle.ACTOR_RESTARTED, "inner")
        assert inner_restarted["attempt"] == 1

        metrics = system.metrics()
        assert (metrics.actor("flaky").restarts, metrics.actor("flaky").failed) == (1, 2)
        assert (metrics.actor("inner").restarts, metrics.actor("inner").failed) == (1, 1)
        assert metrics.actor("watch").restarts == 0
        assert {a.state for a in metrics.actors} == {"running"}
        assert system.health().ok
    # Stopping is reported too (the watcher is stopped by then; recent_lifecycle keeps it).
    stopped = [
        e.data["actor"] for e in system.recent_lifecycle(200) if e.topic == lifecycle.ACTOR_STOPPED
    ]
    assert stopped.index("flaky") < stopped.index("inner") < stopped.index("watch")
    assert stopped.index("watch") < stopped.index("$consumers") < stopped.index("$channels")
    assert {a.state for a in system.metrics().actors} == {"stopped"}


# -- 8. escalation reaching the root stops the system ---------------------------------------


def test_root_escalation_stops_the_system_and_wait_raises() -> None:
    def doomed(event: Event) -> None:
        raise RuntimeError(f"cannot handle {event.topic}")

    # inner gives up at its 2nd restart; $consumers restarts inner twice, then gives
    # up too; $root never restarts anything: the system fails.
    topo = Topology("doomed", strategy=OneForOne(max_restarts=2, backoff=NO_BACKOFF))
    topo.channel("work")
    with topo.supervisor("inner", strategy=OneForOne(max_restarts=1, backoff=NO_BACKOFF)) as inner:
        inner.consumer(
            "bad",
            doomed,
            channel="work",
            pattern="job.#",
            max_deliveries=100,
            failure_threshold=1,
            retry=NO_DELAY,
        )
    system = topo.start()
    for n in range(10):  # each new event that fails is a consumer failure
        system.publish("work", "job.run", {"n": n})
    with pytest.raises(SupervisorEscalation) as caught:
        system.wait(timeout=TIMEOUT)
    escalation = caught.value
    assert escalation.chain == ("inner", "$consumers", "$root")
    assert escalation.supervisor == "$root"
    assert isinstance(escalation.reason, RuntimeError)
    assert "cannot handle job.run" in str(escalation.reason)
    assert system.state == "failed"
    assert system.health().status == "failed"
    # 3 incarnations of inner, 2 crashes of bad in each.
    assert system.metrics().actor("bad").failed == 6
    escalations = [
        e.data["chain"]
        for e in system.recent_lifecycle(200)
        if e.topic == lifecycle.SUPERVISOR_ESCALATED
    ]
    assert escalations[-2:] == [("inner", "$consumers"), ("inner", "$consumers", "$root")]
    # Stopping an already failed system is a no-op that returns at once; the autouse
    # fixture then checks that no reactor thread is left.
    system.stop(timeout=1.0)
    with pytest.raises(SupervisorEscalation):
        system.wait(timeout=0)


def _abandoned_thread_gone(name: str) -> bool:
    return not any(thread.name == name for thread in threading.enumerate())


def test_the_late_result_of_an_abandoned_handler_is_not_published() -> None:
    fake = FakeClock()
    hang = HangOnce(0)
    done: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def slow(event: Event) -> Any:
        hang(event.data["n"])
        return ("job.done", {"n": event.data["n"]})

    def sink(event: Event) -> None:
        with lock:
            done[event.data["n"]] += 1

    topo = Topology("late")
    topo.channel("work")
    topo.consumer("slow", slow, channel="work", pattern="job.run", handler_timeout=1.0)
    topo.consumer("sink", sink, channel="work", pattern="job.done")
    with topo.start(clock=fake) as system, hang:
        for n in range(3):
            system.publish("work", "job.run", {"n": n})
        assert hang.entered.wait(10)
        while not system.metrics().actor("slow").restarts:
            assert fake.wait_for_timers(1)
            fake.advance(0.25)

        def all_done() -> bool:
            if sum(done.values()) < 3:
                # The abandoned event's retry waits out its delay on the fake clock.
                fake.advance(0.005)
            return sum(done.values()) == 3

        wait_for(all_done, 10)
        hang.release.set()  # the abandoned call now returns ("job.done", {"n": 0})
        wait_for(lambda: _abandoned_thread_gone("reactor:slow#1"), 10)
        system.wait_idle(10)
        assert dict(done) == {0: 1, 1: 1, 2: 1}


def test_an_abandoned_incarnation_returning_late_does_not_blind_the_watchdog() -> None:
    fake = FakeClock()
    hang1, hang2 = HangOnce((1, 0)), HangOnce((2, 1))  # (incarnation, n)
    incarnations = itertools.count(1)

    class Handler:
        def __init__(self) -> None:
            self.incarnation = next(incarnations)

        def handle(self, event: Event) -> None:
            hang1((self.incarnation, event.data["n"]))
            hang2((self.incarnation, event.data["n"]))

    def step() -> None:
        fake.advance(0.25)
        assert fake.wait_for_timers(1)

    topo = Topology("clobber")
    topo.channel("work")
    topo.consumer(
        "slow", Handler, channel="work", pattern="job.#", handler_timeout=1.0, retry=NO_DELAY
    )
    system = topo.start(clock=fake)
    try:
        for n in range(3):
            system.publish("work", "job.run", {"n": n})
        assert hang1.entered.wait(10)
        assert fake.wait_for_timers(1)
        while not system.metrics().actor("slow").restarts:
            step()
        assert hang2.entered.wait(10)  # incarnation 2 hangs on #1
        hang1.release.set()  # incarnation 1, fenced, returns late...
        wait_for(lambda: _abandoned_thread_gone("reactor:slow#1"), 10)
        for _ in range(8):  # ...and 2 fake seconds later incarnation 2 is abandoned too
            step()
        assert system.metrics().actor("slow").restarts == 2
    finally:
        hang1.release.set()
        hang2.release.set()
        system.stop(5)
