"""Delayed and scheduled events: publish(delay=/at=), handlers' Delayed, on every backend.

Time is the fake clock's: an event is due when the clock is advanced past its due
time, never before, and the tests wait on conditions, never on sleeps. "Not yet"
is shown by a marker event published after the delayed one: once the marker is
handled, the channel has heard of the delayed event (its ``Due`` came first), so
an early release would have happened by then.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from redis_support import RedisServer
from rich.console import Console

import reactor
from reactor import Delayed, Event, ScheduleError, Topology
from reactor.faces.dashboard import Dashboard
from reactor.faces.export import prometheus_text
from reactor.testing import FakeClock, Recorder, wait_for

TIMEOUT = 30.0
WALL = 1_700_000_000.0


def shop(backend: str, recorder: Recorder, **channel: object) -> Topology:
    topo = Topology("delayed")
    topo.channel("jobs", backend=backend, **channel)
    topo.consumer("worker", recorder, channel="jobs", pattern="#")
    return topo


def topics(recorder: Recorder) -> list[str]:
    return [event.topic for event in list(recorder.events)]


def settle(system: reactor.System, recorder: Recorder, marker: str = "marker") -> None:
    """Publish a marker and wait until it is handled and the system is idle."""
    before = topics(recorder).count(marker)
    system.publish("jobs", marker)
    wait_for(lambda: topics(recorder).count(marker) > before, TIMEOUT, message="marker")
    system.wait_idle(TIMEOUT)


def advance_until(clock: FakeClock, condition: object, seconds: float = 0.0) -> None:
    """Advance ``seconds``, then keep firing timers that fall due until ``condition()``."""
    clock.advance(seconds)

    def fired() -> bool:
        clock.advance(0)  # a timer armed after the advance, for a time already past
        return bool(condition())  # type: ignore[operator]

    wait_for(fired, TIMEOUT, message="the delayed events were not delivered")


def scheduled(system: reactor.System) -> int:
    return system.metrics().channel("jobs").scheduled


def test_a_delayed_event_enters_the_channel_at_its_due_time_not_before(backend: str) -> None:
    clock = FakeClock(wall=WALL)
    recorder = Recorder()
    with shop(backend, recorder).start(clock=clock) as system:
        event = system.publish("jobs", "job.later", {"n": 1}, delay=60)
        assert isinstance(event, Event)
        assert event.topic == "job.later"
        settle(system, recorder)  # wait_idle does not wait for an event due in a minute
        assert topics(recorder) == ["marker"]
        assert scheduled(system) == 1
        clock.advance(59.5)
        settle(system, recorder)
        assert "job.later" not in topics(recorder)
        advance_until(clock, lambda: "job.later" in topics(recorder), 0.5)
        delivered = [e for e in recorder.events if e.topic == "job.later"]
        assert [e.id for e in delivered] == [event.id]
        assert delivered[0].data == {"n": 1}
        system.wait_idle(TIMEOUT)
        assert scheduled(system) == 0
        stats = system.metrics().channel("jobs")
        assert stats.published == 3
        assert stats.acked == 3


def test_at_takes_a_moment_and_due_events_enter_in_due_then_scheduling_order(
    backend: str,
) -> None:
    clock = FakeClock(wall=WALL)
    recorder = Recorder()
    start = datetime.fromtimestamp(WALL, UTC)
    with shop(backend, recorder).start(clock=clock) as system:
        system.publish("jobs", "d", at=start + timedelta(seconds=30))
        system.publish_many("jobs", [Event.create("b"), Event.create("c")], delay=10)
        system.publish("jobs", "e", at=start + timedelta(seconds=30))
        system.publish("jobs", "a", delay=5, key="k")
        system.publish("jobs", "f", at=start - timedelta(hours=1))  # due already: at once
        settle(system, recorder)
        assert topics(recorder) == ["f", "marker"]
        assert scheduled(system) == 5
        advance_until(clock, lambda: len(recorder) == 7, 60)
        assert topics(recorder)[2:] == ["a", "b", "c", "d", "e"]
        system.wait_idle(TIMEOUT)
        assert scheduled(system) == 0


def test_a_handler_returns_delayed_follow_ups(backend: str) -> None:
    clock = FakeClock(wall=WALL)
    expired = Recorder()

    def reserve(event: Event) -> list[Event | Delayed]:
        return [
            event.derive("stock.reserved"),
            Delayed(event.derive("stock.expire", {"order": event.data["order"]}), delay=900),
        ]

    topo = Topology("reservations")
    topo.channel("jobs", backend=backend)
    topo.consumer("reserve", reserve, channel="jobs", pattern="order.placed")
    topo.consumer("worker", expired, channel="jobs", pattern="stock.*")
    topo.consumer("marker", Recorder(), channel="jobs", pattern="marker")
    with topo.start(clock=clock) as system:
        placed = system.publish("jobs", "order.placed", {"order": 7})
        expired.wait_for_count(1, TIMEOUT)
        system.wait_idle(TIMEOUT)
        assert topics(expired) == ["stock.reserved"]
        assert scheduled(system) == 1
        clock.advance(899)
        system.publish("jobs", "marker")
        system.wait_idle(TIMEOUT)
        assert topics(expired) == ["stock.reserved"]
        advance_until(clock, lambda: len(expired) == 2, 1)
        late = expired.events[1]
        assert late.topic == "stock.expire"
        assert late.data == {"order": 7}
        assert late.causation_id == placed.id
        assert late.correlation_id == placed.correlation_id


def test_a_scheduled_event_survives_a_restart_and_fires_once_not_early(durable: str) -> None:
    backend = durable
    first = Recorder()
    with shop(backend, first).start(clock=FakeClock(wall=WALL)) as system:
        event = system.publish("jobs", "job.later", delay=100)
        settle(system, first)
    assert "job.later" not in topics(first)

    # 50s later by the wall clock: not due yet, and still stored.
    clock = FakeClock(wall=WALL + 50)
    second = Recorder()
    with shop(backend, second).start(clock=clock) as system:
        assert scheduled(system) == 1
        settle(system, second)
        assert "job.later" not in topics(second)
        advance_until(clock, lambda: "job.later" in topics(second), 50)
        system.wait_idle(TIMEOUT)
        assert [e.id for e in second.events if e.topic == "job.later"] == [event.id]
        assert scheduled(system) == 0

    # Handled and acked: a third run neither has it scheduled nor delivers it again.
    third = Recorder()
    with shop(backend, third).start(clock=FakeClock(wall=WALL + 500)) as system:
        assert scheduled(system) == 0
        settle(system, third)
        assert topics(third) == ["marker"]


def test_an_event_due_while_no_process_ran_enters_at_the_next_start(durable: str) -> None:
    backend = durable
    with shop(backend, Recorder()).start(clock=FakeClock(wall=WALL)) as system:
        system.publish_many("jobs", [Event.create("one"), Event.create("two")], delay=10)
    recorder = Recorder()
    with shop(backend, recorder).start(clock=FakeClock(wall=WALL + 3600)) as system:
        recorder.wait_for_count(2, TIMEOUT)
        system.wait_idle(TIMEOUT)
        assert topics(recorder) == ["one", "two"]


def test_redis_two_systems_on_one_prefix_release_each_due_event_once(redis_url: str) -> None:
    clock = FakeClock(wall=WALL)
    recorder = Recorder()
    first = shop(redis_url, recorder).start(clock=clock)
    try:
        second = shop(redis_url, recorder).start(clock=clock)
        try:
            ids = set()
            for n in range(10):
                for system in (first, second):  # both channels' actors race for the release
                    ids.add(system.publish("jobs", "job.later", {"n": n}, delay=30).id)
            settle(first, recorder)
            settle(second, recorder, "marker2")
            assert scheduled(first) == 20 or scheduled(second) == 20
            advance_until(clock, lambda: len(recorder) >= 22, 30)
            first.wait_idle(TIMEOUT)
            second.wait_idle(TIMEOUT)
            later = [e.id for e in recorder.events if e.topic == "job.later"]
            assert sorted(later) == sorted(ids)  # each exactly once, between both
        finally:
            second.stop()
    finally:
        first.stop()


def test_memory_scheduled_events_are_lost_with_the_process_and_said_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    system = shop("memory", recorder).start(clock=FakeClock(wall=WALL))
    system.publish_many("jobs", [Event.create("a"), Event.create("b")], delay=3600)
    system.wait_idle(TIMEOUT)  # does not wait for them
    with caplog.at_level(logging.WARNING, logger="reactor"):
        system.stop()
    assert "2 delayed event(s) not yet due" in caplog.text
    assert len(recorder) == 0


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"delay": -1}, "delay must be a finite number of seconds >= 0"),
        ({"delay": math.nan}, "delay must be a finite number"),
        ({"delay": math.inf}, "delay must be a finite number"),
        ({"delay": True}, "delay must be a finite number"),
        ({"delay": "5"}, "delay must be a finite number"),
        ({"at": datetime(2030, 1, 1)}, "naive datetime"),
        ({"at": 1_800_000_000}, "at must be a datetime, not int"),
        ({"delay": 5, "at": datetime(2030, 1, 1, tzinfo=UTC)}, "got both delay=5 and at="),
    ],
)
def test_bad_delay_or_at_is_one_clear_error_and_publishes_nothing(
    kwargs: dict[str, object], says: str
) -> None:
    recorder = Recorder()
    with shop("memory", recorder).start(clock=FakeClock(wall=WALL)) as system:
        with pytest.raises(ScheduleError, match=says.replace("(", r"\(")) as raised:
            system.publish("jobs", "job", **kwargs)  # type: ignore[arg-type]
        assert isinstance(raised.value, ValueError)
        with pytest.raises(ScheduleError, match=says.replace("(", r"\(")):
            system.publish_many("jobs", [Event.create("job")], **kwargs)  # type: ignore[arg-type]
        system.wait_idle(TIMEOUT)
        assert len(recorder) == 0
        assert scheduled(system) == 0
    with pytest.raises(ScheduleError, match=r"needs delay= .* or at="):
        Delayed(Event.create("x"))
    with pytest.raises(ScheduleError, match="naive datetime"):
        Delayed(Event.create("x"), at=datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="wrap an Event"):
        Delayed(("x", 1), delay=1)  # type: ignore[arg-type]


def test_the_memory_scheduled_area_is_bounded_by_capacity_under_each_policy() -> None:
    clock = FakeClock(wall=WALL)
    events = [Event.create("job", {"n": n}) for n in range(4)]

    with shop("memory", Recorder(), capacity=2, overflow="reject").start(clock=clock) as system:
        system.publish_many("jobs", events[:2], delay=10)
        with pytest.raises(reactor.ChannelFull, match="scheduled area is full"):
            system.publish("jobs", events[2], delay=10)
        assert scheduled(system) == 2

    with shop("memory", Recorder(), capacity=2, overflow="block").start(clock=clock) as system:
        system.publish_many("jobs", events[:2], delay=10)
        with pytest.raises(reactor.BackpressureTimeout, match="scheduled area is full"):
            system.publish("jobs", events[2], delay=10, timeout=0)
        assert scheduled(system) == 2

    recorder = Recorder()
    topo = shop("memory", recorder, capacity=2, overflow="drop_newest")
    with topo.start(clock=FakeClock(wall=WALL)) as system:
        assert system.publish_many("jobs", events[:3], delay=10) == 2
        assert scheduled(system) == 2
        assert system.metrics().channel("jobs").dropped == 1

    recorder = Recorder()
    clock = FakeClock(wall=WALL)
    with shop("memory", recorder, capacity=2, overflow="drop_oldest").start(clock=clock) as system:
        system.publish_many("jobs", events, delay=10)
        assert scheduled(system) == 2
        assert system.metrics().channel("jobs").dropped == 2
        advance_until(clock, lambda: len(recorder) == 2, 10)
        assert recorder.data() == [{"n": 2}, {"n": 3}]  # the oldest scheduled were dropped


def test_async_publish_takes_delay_and_at() -> None:
    clock = FakeClock(wall=WALL)
    recorder = Recorder()

    async def main() -> None:
        async with reactor.AsyncSystem(shop("memory", recorder), clock=clock) as system:
            await system.publish("jobs", "later", delay=20)
            await system.publish_many(
                "jobs", [Event.create("at")], at=datetime.fromtimestamp(WALL + 10, UTC)
            )
            with pytest.raises(ScheduleError):
                await system.publish("jobs", "bad", delay=-1)
            await system.wait_idle()
            assert len(recorder) == 0
            assert system.metrics().channel("jobs").scheduled == 2
            await asyncio.to_thread(advance_until, clock, lambda: len(recorder) == 2, 20)
            assert topics(recorder) == ["at", "later"]

    asyncio.run(main())


def test_the_dashboard_and_the_metrics_export_show_how_many_are_scheduled(backend: str) -> None:
    clock = FakeClock(wall=WALL)
    with shop(backend, Recorder()).start(clock=clock) as system:
        system.publish_many("jobs", [Event.create("a"), Event.create("b")], delay=60)
        system.publish("jobs", "c", delay=120)
        metrics = system.metrics()
        assert metrics.channel("jobs").scheduled == 3
        assert 'reactor_channel_scheduled{system="delayed",channel="jobs"} 3' in prometheus_text(
            metrics
        )
        console = Console(record=True, width=140, file=io.StringIO(), color_system=None)
        dashboard = Dashboard(system)
        dashboard.console = console
        console.print(dashboard.render(metrics))
        lines = console.export_text().splitlines()
        header = next(line for line in lines if "later" in line)
        row = next(line for line in lines if line.startswith("jobs "))
        # The "later" column of the channel's row holds the count.
        start = header.index("later")
        assert row[start : start + len("later")].split() == ["3"]


def test_a_batch_handler_returns_delayed_events_too() -> None:
    clock = FakeClock(wall=WALL)
    later = Recorder()

    def store(events: list[Event]) -> list[Delayed]:
        return [Delayed(e.derive("job.check", e.data), delay=30) for e in events]

    topo = Topology("batches")
    topo.channel("jobs")
    topo.consumer("store", store, channel="jobs", pattern="job.run", batch_size=3)
    topo.consumer("check", later, channel="jobs", pattern="job.check")
    with topo.start(clock=clock) as system:
        system.publish_many("jobs", [Event.create("job.run", {"n": n}) for n in range(3)])
        wait_for(lambda: scheduled(system) == 3, TIMEOUT, message="3 scheduled")
        system.wait_idle(TIMEOUT)
        assert len(later) == 0
        advance_until(clock, lambda: len(later) == 3, 30)
        assert later.data() == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_a_handler_scheduling_into_a_full_memory_area_fails_its_event_for_a_retry() -> None:
    clock = FakeClock(wall=WALL)
    tries = Recorder()

    def remind(event: Event) -> Delayed:
        tries(event)
        return Delayed(event.derive("reminder"), delay=60)

    topo = Topology("full")
    topo.channel("jobs", capacity=1)
    # The retry comes only after "other" is due, whatever order the timers' ticks are
    # handled in, so the retry is known to find room.
    retry = reactor.Retry(min_s=1000, max_s=1000, jitter=0)
    topo.consumer("remind", remind, channel="jobs", pattern="job", retry=retry)
    with topo.start(clock=clock) as system:
        system.publish("jobs", "other", delay=600)  # fills the area (capacity 1)
        system.publish("jobs", "job")
        wait_for(
            lambda: system.metrics().group("jobs", "remind").nacked >= 1,
            TIMEOUT,
            message="the event whose Delayed found no room failed",
        )
        assert scheduled(system) == 1
        # Once "other" is due the area has room: the retry schedules its reminder.
        advance_until(clock, lambda: scheduled(system) == 0, 600)
        advance_until(clock, lambda: len(tries) == 2, 400)
        system.wait_idle(TIMEOUT)
        assert scheduled(system) == 1
        assert system.metrics().group("jobs", "remind").acked == 1


def test_redis_retention_applies_to_released_events(
    redis_server: RedisServer, redis_url: str
) -> None:
    clock = FakeClock(wall=WALL)
    recorder = Recorder()
    topo = Topology("retention")
    topo.channel("jobs", backend=f"{redis_url}&maxlen=2")
    topo.consumer("worker", recorder, channel="jobs", pattern="handled")
    with topo.start(clock=clock) as system:
        system.publish_many("jobs", [Event.create("kept", {"n": n}) for n in range(5)], delay=5)
        advance_until(clock, lambda: scheduled(system) == 0, 5)
        prefix = parse_qs(urlsplit(redis_url).query)["prefix"][0]
        with redis_server.client() as client:
            assert client.xlen(f"{prefix}:jobs") == 2  # MAXLEN, exact: as a publish trims
