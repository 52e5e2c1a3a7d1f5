"""system.controls: what a presenter's keys act through, and the mistakes it refuses."""

from __future__ import annotations

import math

import pytest

import reactor
from reactor.errors import UnknownActorError, UsageError
from reactor.runtime.controls import MAX_RATE, MIN_RATE
from reactor.testing import wait_for


def _topology() -> reactor.Topology:
    topo = reactor.Topology("controlled")
    topo.channel("work")
    topo.producer("feed", channel="work", topic="job.new", source=lambda: 1, interval=0.5)
    topo.producer("batch", channel="work", topic="job.new", source=range(3), rate=5)
    topo.pool("workers", lambda event: None, channel="work", min_size=2, max_size=2)
    return topo


def test_crashing_a_pool_crashes_one_member() -> None:
    with _topology().start() as system:
        crashed = system.controls.crash("workers")
        assert crashed in ("workers-1", "workers-2")
        wait_for(lambda: system.metrics().actor(crashed).restarts == 1)


def test_what_cannot_be_crashed_is_named_with_what_can() -> None:
    with _topology().start() as system:
        with pytest.raises(UnknownActorError) as raised:
            system.controls.crash("wrokers")
        message = str(raised.value)
        assert "cannot crash 'wrokers'" in message
        assert "workers" in message
        assert "feed" in message


def test_rates_of_polled_and_iterable_producers() -> None:
    with _topology().start() as system:
        controls = system.controls
        assert controls.producers() == ("feed", "batch")
        assert controls.rate("feed") == pytest.approx(2.0)  # one poll per 0.5 s
        assert controls.rate("batch") == pytest.approx(5.0)
        assert controls.set_rate("feed", 8) == 8
        assert controls.rate("feed") == pytest.approx(8.0)
        assert controls.set_rate("batch", 0) == MIN_RATE
        assert controls.set_rate("batch", 1e12) == MAX_RATE
        for bad in (math.nan, math.inf):
            with pytest.raises(UsageError, match="finite number"):
                controls.set_rate("batch", bad)
        with pytest.raises(
            UnknownActorError, match=r"no producer named 'fed' \(producers: feed, batch\)"
        ):
            controls.pause("fed")


def test_a_flood_takes_a_positive_count() -> None:
    with _topology().start() as system:
        for bad in (0, -3, 1.5, True):
            with pytest.raises(UsageError, match="positive integer"):
                system.controls.flood("feed", bad)  # type: ignore[arg-type]
        assert system.controls.channel_of("feed") == "work"
