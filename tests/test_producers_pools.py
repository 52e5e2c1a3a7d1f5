"""Producers (iterables, polled callables, rate limits) and autoscaling pools."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest

from reactor import Event, PoolScaling, Topology
from reactor.testing import FakeClock, Recorder, wait_for


def test_iterable_producer_finishes_and_the_system_knows() -> None:
    topo = Topology("iterable")
    topo.channel("c")
    recorder = Recorder()
    topo.consumer("x", recorder, channel="c")
    topo.producer("p", channel="c", topic="t.x", source=range(500), key=lambda n: f"k{n % 3}")
    with topo.start() as system:
        system.wait_idle(10)
        assert recorder.data() == list(range(500))
        assert {e.key for e in recorder.events} == {"k0", "k1", "k2"}
        assert {e.source for e in recorder.events} == {"p"}
        # A finished producer stops itself; its supervisor records that just after.
        wait_for(lambda: system.metrics().actor("p").state == "stopped")
        producer = system.metrics().actor("p")
        assert (producer.kind, producer.state, producer.handled) == ("producer", "stopped", 500)


def test_key_by_field_name() -> None:
    topo = Topology("keyfield")
    topo.channel("c")
    recorder = Recorder()
    topo.consumer("x", recorder, channel="c")
    topo.producer(
        "p", channel="c", topic="t.x", source=[{"customer": 7}, {"other": 1}], key="customer"
    )
    with topo.start() as system:
        system.wait_idle(5)
    assert [e.key for e in recorder.events] == ["7", None]


def test_events_from_an_iterable_pass_through_unchanged() -> None:
    ready = [Event.create("a.b", {"n": n}) for n in range(3)]
    topo = Topology("ready")
    topo.channel("c")
    recorder = Recorder()
    topo.consumer("x", recorder, channel="c")
    topo.producer("p", channel="c", topic="ignored.topic", source=ready)
    with topo.start() as system:
        system.wait_idle(5)
    assert recorder.events == ready


def test_callable_producer_polls_on_the_interval() -> None:
    clock = FakeClock()
    counter = itertools.count()
    topo = Topology("poll")
    topo.channel("c")
    recorder = Recorder()
    topo.consumer("x", recorder, channel="c")
    topo.producer("p", channel="c", topic="t.tick", source=lambda: next(counter), interval=1.0)
    with topo.start(clock=clock) as system:
        for expected in range(1, 6):
            assert clock.wait_for_timers(1)
            clock.advance(1.0)
            recorder.wait_for_count(expected)
        system.wait_idle(5)  # a polled producer is never "finished"; idle is about what it sent
        assert recorder.data() == [0, 1, 2, 3, 4]


def test_callable_returning_none_publishes_nothing() -> None:
    clock = FakeClock()
    values = iter([None, "a", None, "b"])
    topo = Topology("none")
    topo.channel("c")
    recorder = Recorder()
    topo.consumer("x", recorder, channel="c")
    topo.producer("p", channel="c", topic="t.x", source=lambda: next(values, None), interval=0.5)
    with topo.start(clock=clock) as system:
        for _ in range(4):
            assert clock.wait_for_timers(1)
            clock.advance(0.5)
        recorder.wait_for_count(2)
        system.wait_idle(5)
    assert recorder.data() == ["a", "b"]


def test_rate_limit_on_an_iterable() -> None:
    clock = FakeClock()
    topo = Topology("rate")
    topo.channel("c")
    recorder = Recorder()
    topo.consumer("x", recorder, channel="c")
    topo.producer("p", channel="c", topic="t.x", source=range(1000), rate=10.0)
    with topo.start(clock=clock) as system:
        for second in range(1, 4):
            assert clock.wait_for_timers(1)
            clock.advance(1.0)
            wait_for(lambda s=second: len(recorder) >= 10 * s)  # type: ignore[misc]
            assert clock.wait_for_timers(1)
            # The bucket holds at most one second of tokens: never more than rate * elapsed.
            assert len(recorder) <= 10 * second + 1
        system.stop(drain=False)


def test_a_failing_source_restarts_the_producer_and_resumes() -> None:
    def source() -> Any:
        yield from range(3)

    items = source()
    topo = Topology("flaky-source")
    topo.channel("c")
    recorder = Recorder()
    topo.consumer("x", recorder, channel="c")
    topo.producer("p", channel="c", topic="t.x", source=items)
    with topo.start() as system:
        system.wait_idle(5)
    assert recorder.data() == [0, 1, 2]


def _pool_topology(release: threading.Event, recorder: Recorder, max_size: int = 4) -> Topology:
    def handle(event: Event) -> None:
        release.wait(10)
        recorder(event)

    topo = Topology("pool")
    topo.channel("jobs")
    topo.pool(
        "workers",
        handle,
        channel="jobs",
        min_size=1,
        max_size=max_size,
        prefetch=2,
        scaling=PoolScaling(interval_s=1.0, scale_up_backlog=5, up_after=2, down_after=3),
    )
    return topo


def test_pool_scales_up_under_backlog_and_down_when_idle() -> None:
    clock = FakeClock()
    release, recorder = threading.Event(), Recorder()
    topo = _pool_topology(release, recorder)
    with topo.start(clock=clock) as system:
        for n in range(200):
            system.publish("jobs", "job.run", n)
        wait_for(lambda: system.metrics().group("jobs", "workers").backlog == 198)

        def members() -> int:
            return system.metrics().group("jobs", "workers").members

        for expected in (2, 3, 4):
            for _ in range(2):  # up_after=2 looks in a row
                assert clock.wait_for_timers(1)
                clock.advance(1.0)
            wait_for(lambda e=expected: members() == e)  # type: ignore[misc]
        for _ in range(3):  # already at max_size: stays
            assert clock.wait_for_timers(1)
            clock.advance(1.0)
        assert members() == 4
        release.set()
        system.wait_idle(10)
        assert sorted(recorder.data()) == list(range(200))
        assert len({e.id for e in recorder.events}) == 200
        for expected in (3, 2, 1):
            for _ in range(3):  # down_after=3 idle looks in a row
                assert clock.wait_for_timers(1)
                clock.advance(1.0)
            wait_for(lambda e=expected: members() == e)  # type: ignore[misc]
        snapshot = system.metrics()
        names = {a.name for a in snapshot.actors if a.kind == "member"}
        assert names == {"workers-1"}
        # Removed members' work stays counted, in the pool's own counters.
        assert snapshot.actor("workers").handled + snapshot.actor("workers-1").handled == 200


def test_removing_a_pool_member_hands_back_what_it_held() -> None:
    clock = FakeClock()
    release, recorder = threading.Event(), Recorder()
    topo = _pool_topology(release, recorder, max_size=2)
    with topo.start(clock=clock) as system:
        for n in range(40):
            system.publish("jobs", "job.run", n)
        # The pool scales on what the channel holds: let it take in every publish first.
        wait_for(lambda: system.metrics().group("jobs", "workers").backlog == 38)
        for _ in range(2):
            assert clock.wait_for_timers(1)
            clock.advance(1.0)
        wait_for(lambda: system.metrics().group("jobs", "workers").members == 2)
        release.set()
        system.wait_idle(10)
        assert sorted(recorder.data()) == list(range(40))


@pytest.mark.parametrize("size", [1, 3])
def test_pool_members_share_one_group(size: int) -> None:
    recorder = Recorder()
    topo = Topology("share")
    topo.channel("jobs")
    topo.pool("w", recorder, channel="jobs", min_size=size, max_size=size)
    with topo.start() as system:
        for n in range(300):
            system.publish("jobs", "job.run", n, key=f"k{n % 10}")
        system.wait_idle(10)
        assert sorted(recorder.data()) == list(range(300))
        assert system.metrics().group("jobs", "w").members == size
