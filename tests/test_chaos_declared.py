"""Chaos declared beside a consumer (``reactor.Chaos``, a ``chaos`` table in TOML).

Which calls fail is a pure function of seed, consumer, event id and attempt, so the
outcome of a run is computed before it; the outage runs on a fake clock.
"""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from typing import ClassVar

import pytest

import reactor
from reactor import Chaos, Event, Retry, Topology
from reactor.errors import TopologyError
from reactor.messages import lifecycle
from reactor.runtime.chaos import ChaosHandler
from reactor.testing import FakeClock, wait_for

EVENTS = 200
MAX_DELIVERIES = 4


def test_crash_rate_fails_exactly_the_predicted_attempts() -> None:
    chaos = Chaos(crash_rate=0.5, seed=5)
    handled: list[str] = []
    lock = threading.Lock()

    def handle(event: Event) -> None:
        with lock:
            handled.append(event.id)

    topo = Topology("chaotic")
    topo.channel("work", capacity=EVENTS)
    topo.consumer(
        "worker",
        handle,
        channel="work",
        chaos=chaos,
        max_deliveries=MAX_DELIVERIES,
        retry=Retry(min_s=0.001, max_s=0.01),
        failure_threshold=1_000,
    )
    events = [Event.create("job.new", n) for n in range(EVENTS)]
    dead = {
        e.id
        for e in events
        if all(chaos.fails("worker", e.id, a) for a in range(1, MAX_DELIVERIES + 1))
    }
    failures = sum(
        next(
            (a - 1 for a in range(1, MAX_DELIVERIES + 1) if not chaos.fails("worker", e.id, a)),
            MAX_DELIVERIES,
        )
        for e in events
    )
    assert failures > 0  # at this rate, both happen whatever the event ids
    assert dead
    with topo.start() as system:
        system.publish_many("work", events)
        system.wait_idle(30)
        metrics = system.metrics()
        letters = [e.data for e in system.recent_lifecycle(500) if e.topic == lifecycle.DEADLETTER]
    assert sorted(handled) == sorted(e.id for e in events if e.id not in dead)
    assert metrics.actor("worker").event_failures == failures
    assert metrics.channel("work").dead_lettered == len(dead)
    assert {letter["error_type"] for letter in letters} == {"ChaosError"}


def test_latency_is_added_before_every_call() -> None:
    topo = Topology("slow")
    topo.channel("work")
    topo.consumer("worker", lambda event: None, channel="work", chaos=Chaos(latency_s=0.05))
    with topo.start() as system:
        for n in range(3):
            system.publish("work", "job.new", n)
        system.wait_idle(10)
        latency = system.metrics().actor("worker").latency
    assert latency.count == 3
    assert latency.p50 >= 0.05  # a lower bound: the handler waited at least that long


def test_an_outage_is_waited_out_and_nothing_is_lost() -> None:
    clock = FakeClock()
    handled: list[int] = []
    topo = Topology("outage")
    topo.channel("work")
    topo.consumer(
        "worker",
        lambda event: handled.append(event.data),
        channel="work",
        chaos=Chaos(outage_after_s=1, outage_s=2),
        retry=Retry(min_s=0.5, max_s=0.5, jitter=0),
    )
    system = topo.start(clock=clock)
    try:
        system.publish("work", "job.new", 1)
        wait_for(lambda: handled == [1], message="handled before the outage")
        clock.advance(1.5)  # inside the outage
        system.publish("work", "job.new", 2)
        wait_for(lambda: system.metrics().actor("worker").event_failures == 1)
        assert clock.wait_for_timers(1)
        clock.advance(0.5)  # the retry, still inside the outage
        wait_for(lambda: system.metrics().actor("worker").event_failures == 2)
        assert handled == [1]
        assert clock.wait_for_timers(1)
        clock.advance(1.5)  # past the outage: the next retry goes through
        wait_for(lambda: handled == [1, 2], message="not handled after the outage")
        failed = [
            e.data["error_type"]
            for e in system.recent_lifecycle()
            if e.topic == lifecycle.ACTOR_FAILED
        ]
        assert failed == []  # an outage fails events, not the consumer
        assert system.metrics().channel("work").dead_lettered == 0
    finally:
        system.stop(timeout=10)


def test_outage_window_bounds() -> None:
    chaos = Chaos(outage_after_s=5, outage_s=3)
    assert chaos.outage_left(4.9) == 0
    assert chaos.outage_left(5) == 3
    assert chaos.outage_left(7.5) == pytest.approx(0.5)
    assert chaos.outage_left(8) == 0
    assert Chaos().outage_left(100) == 0


class Counted:
    """A handler class: a new instance per incarnation, started each time."""

    started: ClassVar[list[Counted]] = []

    def on_start(self) -> None:
        Counted.started.append(self)

    def handle(self, event: Event) -> None:
        return None


def test_a_handler_class_is_instantiated_per_incarnation_under_chaos() -> None:
    Counted.started = []
    topo = Topology("classy")
    topo.channel("work")
    topo.consumer("worker", Counted, channel="work", chaos=Chaos(latency_s=0.001))
    with topo.start() as system:
        system.controls.crash("worker")
        wait_for(lambda: len(Counted.started) == 2, message="not restarted with a new instance")
    assert Counted.started[0] is not Counted.started[1]
    assert isinstance(Counted.started[0], Counted)


def test_chaos_wrapper_repr_names_what_it_wraps() -> None:
    wrapper = ChaosHandler(print, Chaos(crash_rate=0.5), "worker", lambda: 0.0)
    assert "crash_rate=0.5" in repr(wrapper)


# -- declared in TOML --------------------------------------------------------------------


def _toml(folder: Path, chaos: str) -> Path:
    path = folder / "chaos.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [channels.work]

            [consumers.worker]
            channel = "work"
            handler = "json:dumps"
            chaos = {chaos}
            """
        )
    )
    return path


def test_chaos_in_toml_becomes_a_chaos_value(tmp_path: Path) -> None:
    chaos = "{ crash_rate = 0.1, latency_s = 0.01, outage_after_s = 5, outage_s = 2, seed = 3 }"
    topo = Topology.from_toml(_toml(tmp_path, chaos))
    assert topo.consumers()[0].chaos == Chaos(
        crash_rate=0.1, latency_s=0.01, outage_after_s=5, outage_s=2, seed=3
    )


@pytest.mark.parametrize(
    ("chaos", "expected"),
    [
        ("{ crash_rate = 1.5 }", "consumers.worker.chaos.crash_rate must be a number >= 0, at most 1"),
        ("{ crash_rate = nan }", "consumers.worker.chaos.crash_rate must be a number"),
        ("{ latency_s = -1 }", "consumers.worker.chaos.latency_s must be a number of seconds >= 0"),
        ("{ outage_after_s = inf }", "consumers.worker.chaos.outage_after_s must be"),
        ("{ outage_s = 1e9 }", "consumers.worker.chaos.outage_s must be a number of seconds >= 0, at most 86400"),
        ("{ seed = 1.5 }", "consumers.worker.chaos.seed must be an integer"),
        ("{ outage = 3 }", "unknown key 'outage'; did you mean 'outage_s'?"),
        ("3", "consumers.worker.chaos must be a table, got 3"),
    ],
)  # fmt: skip
def test_each_chaos_option_is_checked_on_its_line(
    tmp_path: Path, chaos: str, expected: str
) -> None:
    with pytest.raises(TopologyError) as raised:
        Topology.from_toml(_toml(tmp_path, chaos))
    problems = raised.value.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith("chaos.toml: line 6: "), problems[0]
    assert expected in problems[0]


def test_the_builder_checks_chaos_too() -> None:
    topo2 = Topology("worse")
    topo2.channel("work")
    topo2.consumer("worker", print, channel="work", chaos="lots")
    with pytest.raises(TopologyError, match=r"chaos must be a reactor\.Chaos, got str"):
        topo2.validate()
    with pytest.raises(ValueError, match="crash_rate"):
        Chaos(crash_rate=-1)  # a value refuses a bad option when it is made
    assert reactor.Chaos is Chaos
