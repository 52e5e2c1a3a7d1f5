"""The capacity gate's extension points for brokers: suspend while unreachable, recount."""

from __future__ import annotations

import threading

import pytest

from reactor.channels.gate import CapacityGate
from reactor.errors import BackpressureTimeout, ChannelFull
from reactor.testing import wait_for

DOWN = "cannot reach Redis at redis://h:1/0 (ConnectionError: refused)"


def test_a_suspended_reject_gate_raises_and_names_why() -> None:
    gate = CapacityGate("orders", 10, "reject")
    gate.suspend(DOWN)
    with pytest.raises(ChannelFull, match=r"channel 'orders' cannot reach Redis .* 'reject'"):
        gate.acquire(1, None)
    assert gate.acquire(3, None, overdraft=True) == 3  # a handler's own publish never waits


def test_a_suspended_drop_newest_gate_admits_nothing() -> None:
    gate = CapacityGate("orders", 10, "drop_newest")
    gate.suspend(DOWN)
    assert gate.acquire(4, None) == 0
    gate.suspend(None)
    assert gate.acquire(4, None) == 4


def test_a_suspended_block_gate_times_out_then_resumes() -> None:
    gate = CapacityGate("orders", 10, "block")
    gate.suspend(DOWN)
    with pytest.raises(BackpressureTimeout, match=r"for 0.01s; the events were not published"):
        gate.acquire(1, 0.01)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(gate.acquire(2, 5.0)))
    waiter.start()
    wait_for(lambda: gate.suspended is not None and waiter.is_alive())
    gate.suspend(None)
    waiter.join(5)
    assert got == [2]
    assert gate.used == 2


def test_recount_sets_the_count_and_reports_idle() -> None:
    idle: list[bool] = []
    gate = CapacityGate("orders", 10, "block", on_idle=lambda: idle.append(True))
    gate.acquire(5, None)
    seen: list[tuple[int, int]] = []

    def count(used: int, taken: int) -> int:
        seen.append((used, taken))
        return 0

    gate.recount(count)
    assert seen == [(5, 5)]
    assert (gate.used, idle) == (0, [True])
    gate.recount(lambda used, taken: 0)  # already idle: not reported again
    assert idle == [True]


def test_try_take_takes_all_or_nothing_and_never_waits() -> None:
    gate = CapacityGate("c", 3, "block")
    assert gate.try_take(2)
    assert not gate.try_take(2)  # only one left: none is taken
    assert gate.used == 2
    assert gate.try_take(1)
    assert (gate.used, gate.peak, gate.taken) == (3, 3, 3)
    gate.release(3)
    gate.suspend("lost its broker")
    assert not gate.try_take(1)  # a suspended gate counts as full
    assert gate.used == 0
