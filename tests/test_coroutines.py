"""Consumers with ``async def`` handlers: concurrency, per-key order, failures, timeouts."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from support import in_key_order

import reactor
from reactor import ActorMetrics, Event, Topology, current_delivery
from reactor.testing import wait_for

pytestmark = pytest.mark.timeout(60)


def _loop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith(":loop")]


class Gauge:
    """Counts the coroutines running at once, and remembers the most."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.seen: list[Event] = []

    def enter(self) -> int:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            return self.running

    def leave(self, event: Event) -> None:
        with self.lock:
            self.running -= 1
            self.seen.append(event)


def _run_jobs(handle: Any, count: int, *, keys: int = 0, **options: Any) -> ActorMetrics:
    """Run ``count`` events (keyed over ``keys`` keys, if any) through a ``worker`` consumer."""
    topo = Topology("jobs")
    topo.channel("jobs")
    topo.consumer("worker", handle, channel="jobs", **options)
    with topo.start() as system:
        for n in range(count):
            system.publish("jobs", "job.run", n, key=f"k{n % keys}" if keys else None)
        system.wait_idle(30)
        return system.metrics().actor("worker")


def test_a_thousand_events_run_fifty_at_a_time_with_each_keys_order_intact() -> None:
    gauge = Gauge()

    async def handle(event: Event) -> None:
        gauge.enter()
        await asyncio.sleep(0.001)
        gauge.leave(event)

    metrics = _run_jobs(handle, 1000, keys=20, concurrency=50)
    assert metrics.handled == 1000
    assert metrics.event_failures == 0
    assert sorted(e.data for e in gauge.seen) == list(range(1000))  # each once
    assert in_key_order(gauge.seen), "a key ran out of order"
    # One key at a time: never more running than there are keys.
    assert 1 < gauge.peak <= 20
    assert _loop_threads() == []


def test_concurrency_is_reached_and_never_passed() -> None:
    gauge = Gauge()
    all_in = threading.Event()

    async def handle(event: Event) -> None:
        if gauge.enter() == 50:
            all_in.set()
        # The first fifty wait for each other: they can only all arrive if they overlap.
        assert await asyncio.to_thread(all_in.wait, 10), "fifty never ran at once"
        gauge.leave(event)

    assert _run_jobs(handle, 120, concurrency=50).event_failures == 0
    assert gauge.peak == 50
    assert len(gauge.seen) == 120


def test_a_failing_coroutine_is_retried_then_dead_lettered_with_default_settings() -> None:
    attempts: list[int] = []
    done: list[int] = []

    async def handle(event: Event) -> tuple[str, Any] | None:
        if event.data == "poison":
            attempts.append(current_delivery().attempt)
            raise ValueError("cannot digest poison")
        done.append(event.data)
        return ("job.done", event.data) if event.topic == "job.run" else None

    topo = Topology("poison")
    topo.channel("jobs")
    topo.consumer("worker", handle, channel="jobs", pattern="job.run", concurrency=8)
    with topo.start() as system:
        for n in range(20):
            system.publish("jobs", "job.run", "poison" if n == 7 else n, key=f"k{n % 3}")
        system.wait_idle(30)
        letters = system.dead_letters("jobs")
        metrics = system.metrics().actor("worker")
        channel = system.metrics().channel("jobs")
    assert attempts == [1, 2, 3, 4, 5]
    assert len(letters) == 1
    assert letters[0].error_type == "ValueError"
    assert "cannot digest poison" in letters[0].message
    assert sorted(done) == [n for n in range(20) if n != 7]
    assert metrics.restarts == 0
    # The outputs of the successes went into the channel (and matched no group).
    assert channel.published == 20 + 19


def test_a_hung_coroutine_is_cancelled_at_handler_timeout_and_dead_lettered() -> None:
    cancelled: list[int] = []
    handled: list[int] = []

    async def handle(event: Event) -> None:
        if event.data == "hang":
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                cancelled.append(current_delivery().attempt)
                raise
        handled.append(event.data)

    topo = Topology("hang")
    topo.channel("jobs")
    topo.consumer(
        "worker", handle, channel="jobs", concurrency=4, handler_timeout=0.2, max_deliveries=2
    )
    with topo.start() as system:
        for n in range(10):
            system.publish("jobs", "job.run", "hang" if n == 3 else n)
        system.wait_idle(30)
        letters = system.dead_letters("jobs")
        metrics = system.metrics().actor("worker")
    assert cancelled == [1, 2]
    assert sorted(handled) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert [letter.error_type for letter in letters] == ["TimeoutError"]
    assert "handler_timeout of 0.2s" in letters[0].message
    assert metrics.restarts == 0, "a cancelled coroutine does not cost the consumer a restart"
    assert _loop_threads() == []


def test_a_failing_key_holds_its_later_events_behind_the_retry() -> None:
    order: list[int] = []
    failed_once = threading.Event()

    async def handle(event: Event) -> None:
        if event.data == 2 and not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("first try fails")
        order.append(event.data)

    topo = Topology("held")
    topo.channel("jobs")
    topo.consumer("worker", handle, channel="jobs", concurrency=10, retry=reactor.Retry(min_s=0.05))
    with topo.start() as system:
        for n in range(6):
            system.publish("jobs", "job.run", n, key="same")
        system.wait_idle(30)
    assert order == [0, 1, 2, 3, 4, 5]


class Lifecycle:
    """An object handler with coroutine hooks."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def on_start(self) -> None:
        await asyncio.sleep(0)
        self.calls.append("start")

    async def handle(self, event: Event) -> None:
        self.calls.append(f"handle {event.data}")

    async def on_stop(self) -> None:
        await asyncio.sleep(0)
        self.calls.append("stop")


def test_coroutine_hooks_run_on_the_consumers_loop_and_the_loop_ends_with_it() -> None:
    handler = Lifecycle()
    topo = Topology("hooks")
    topo.channel("jobs")
    topo.consumer("worker", handler, channel="jobs")
    with topo.start() as system:
        assert len(_loop_threads()) == 1
        system.publish("jobs", "job.run", 1)
        system.wait_idle(10)
    assert handler.calls == ["start", "handle 1", "stop"]
    assert _loop_threads() == []


def test_a_consumer_that_keeps_failing_restarts_without_leaking_its_loop() -> None:
    async def handle(event: Event) -> None:
        raise RuntimeError("dependency down")

    topo = Topology("broken")
    topo.channel("jobs")
    topo.consumer("worker", handle, channel="jobs", failure_threshold=2, concurrency=2)
    with topo.start() as system:
        for n in range(4):
            system.publish("jobs", "job.run", n)
        wait_for(lambda: system.metrics().actor("worker").restarts >= 1, timeout=20)
        wait_for(lambda: len(_loop_threads()) == 1, timeout=10, message="one loop per incarnation")
    assert _loop_threads() == []


def test_concurrency_needs_an_async_handler() -> None:
    topo = Topology("plain")
    topo.channel("jobs")
    topo.consumer("worker", lambda event: None, channel="jobs", concurrency=5)
    with pytest.raises(reactor.TopologyError, match=r"concurrency=5 .* `async def`"):
        topo.validate()


def test_toml_declares_an_async_consumer(tmp_path: Path) -> None:
    module = f"async_handlers_{id(tmp_path)}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            seen = []
            async def handle(event):
                await asyncio.sleep(0)
                seen.append(event.data)
            """
        )
    )
    (tmp_path / "a.toml").write_text(
        textwrap.dedent(
            f"""
            [channels.jobs]
            [consumers.worker]
            channel = "jobs"
            handler = "{module}:handle"
            concurrency = 10
            """
        )
    )
    topo = Topology.from_toml(tmp_path / "a.toml")
    try:
        with topo.start() as system:
            for n in range(30):
                system.publish("jobs", "job.run", n)
            system.wait_idle(10)
        assert sorted(sys.modules[module].seen) == list(range(30))
    finally:
        sys.modules.pop(module, None)
