"""The clocks: wall time on the protocol, a fake clock that never goes back."""

from __future__ import annotations

import random
import threading
import time

import pytest

from reactor.channels.redis.link import RETRY
from reactor.clock import SystemClock
from reactor.errors import ClockError, ReactorError
from reactor.testing import FakeClock


def test_a_fake_clock_refuses_to_go_back() -> None:
    clock = FakeClock(start=100.0)
    fired: list[float] = []
    clock.call_later(1.0, lambda: fired.append(clock.monotonic()))
    with pytest.raises(ClockError, match=r"advance\(-5\).*never goes backwards") as info:
        clock.advance(-5)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ReactorError)
    assert clock.monotonic() == 100.0
    clock.advance(0)
    assert fired == []
    clock.advance(1.0)
    assert fired == [101.0]


def test_fake_wall_time_moves_with_the_fake_clock() -> None:
    clock = FakeClock(start=10.0, wall=5000.0)
    assert clock.wall() == 5000.0
    clock.advance(2.5)
    assert (clock.monotonic(), clock.wall()) == (12.5, 5002.5)


def test_the_system_clock_tells_wall_time() -> None:
    before = time.time()
    wall = SystemClock().wall()
    assert before <= wall <= time.time()


def test_redis_retries_back_off_exponentially_with_the_injected_jitter() -> None:
    first = [RETRY.delay(n + 1, random.Random(7)) for n in range(1, 12)]
    again = [RETRY.delay(n + 1, random.Random(7)) for n in range(1, 12)]
    assert first == again  # the generator decides the jitter: seeded, it repeats
    assert 0.0375 <= first[0] <= 0.0625  # 50 ms +-25%
    assert 0.075 <= first[1] <= 0.125
    assert max(first) <= 2.0  # capped
    assert first[-1] >= 1.5


@pytest.mark.parametrize("delay", [float("inf"), float("-inf"), float("nan"), -1.0])
@pytest.mark.parametrize("clock_type", [SystemClock, FakeClock])
def test_a_timer_that_can_never_fire_is_refused_by_name(clock_type: type, delay: float) -> None:
    clock = clock_type()
    try:
        with pytest.raises(ClockError, match=r"call_later\(.*\): a timer's delay must be") as info:
            clock.call_later(delay, lambda: None)
        assert isinstance(info.value, ValueError)
    finally:
        if isinstance(clock, SystemClock):
            clock.close()


def test_the_timer_thread_survives_a_failing_callback_and_a_far_off_timer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = SystemClock("reactor-test-timer")
    fired = threading.Event()

    def broken() -> None:
        raise OverflowError("callback bug")

    try:
        # Past threading.TIMEOUT_MAX: waited for in capped steps, never in one wait.
        far = clock.call_later(1e12, lambda: None)
        clock.call_later(0.0, broken)
        clock.call_later(0.01, fired.set)
        assert fired.wait(5), "the timer thread died with the first failing callback"
        far.cancel()
    finally:
        clock.close()
    assert any("a timer callback failed" in r.getMessage() for r in caplog.records)
