"""Each presenter key does what the key line says, on a system driven by a fake clock.

The producer polls a counting source every 0.1 s of a :class:`FakeClock`: time only
moves when the test steps it, so how many polls a key allows is known exactly.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator

import pytest
from rich.console import Console

import reactor
from reactor.faces.dashboard import Dashboard
from reactor.faces.presenter import Presenter
from reactor.messages import lifecycle
from reactor.testing import FakeClock, wait_for

CAPACITY = 10


class Source:
    """Counts its polls; each poll is one event."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls


class Rig:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.source = Source()
        self.release = threading.Event()
        self.release.set()
        self.quits = 0
        topo = reactor.Topology("keys")
        topo.channel("work", capacity=CAPACITY)
        topo.producer("feed", channel="work", topic="job.new", source=self.source, interval=0.1)
        topo.consumer("worker", self.handle, channel="work", prefetch=CAPACITY)
        self.system = topo.start(clock=self.clock)
        self.presenter = Presenter(self.system, self.quit, self.clock.monotonic, fd=None)
        self.presenter.render(self.system.metrics(), self.clock.monotonic())

    def handle(self, event: reactor.Event) -> None:
        self.release.wait(10)

    def quit(self) -> None:
        self.quits += 1

    def step(self, seconds: float = 0.1) -> None:
        """Let the producer's next timer fire, and wait until it scheduled the one after."""
        assert self.clock.wait_for_timers(1), "the producer scheduled no poll"
        self.clock.advance(seconds)
        assert self.clock.wait_for_timers(1), "the producer did not poll again"

    def select(self, name: str) -> None:
        for _ in range(4):
            if self.presenter.selected == name:
                return
            self.presenter.press("\t")
        raise AssertionError(f"tab never selected {name!r}")


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = Rig()
    try:
        yield made
    finally:
        made.release.set()
        made.system.stop(timeout=10)


def test_tab_and_arrows_move_the_selection(rig: Rig) -> None:
    assert rig.presenter.selected == "worker"  # the first row of the table
    rig.presenter.press("\t")
    assert rig.presenter.selected == "feed"
    rig.presenter.press("\x1b[B")  # down wraps around
    assert rig.presenter.selected == "worker"
    rig.presenter.press("k")
    assert rig.presenter.selected == "feed"


def test_c_crashes_the_selected_consumer_and_its_supervisor_restarts_it(rig: Rig) -> None:
    rig.presenter.press("c")
    assert rig.presenter.message.startswith("crashed worker")
    wait_for(lambda: rig.system.metrics().actor("worker").restarts == 1, message="no restart")
    failures = [
        event.data
        for event in rig.system.recent_lifecycle()
        if event.topic == lifecycle.ACTOR_FAILED
    ]
    assert [(f["actor"], f["error_type"]) for f in failures] == [("worker", "CrashRequested")]


def test_p_pauses_and_resumes_the_selected_producer(rig: Rig) -> None:
    rig.select("feed")
    rig.step()
    rig.step()
    assert rig.source.calls == 2
    rig.presenter.press("p")
    assert rig.system.controls.paused("feed")
    assert rig.presenter.message == "paused feed"
    for _ in range(3):
        rig.step()
    assert rig.source.calls == 2  # three polls came due; none ran
    rig.presenter.press("p")
    assert rig.presenter.message == "resumed feed"
    rig.step()
    assert rig.source.calls == 3


def test_plus_and_minus_double_and_halve_the_rate(rig: Rig) -> None:
    rig.select("feed")
    assert rig.system.controls.rate("feed") == pytest.approx(10.0)
    rig.presenter.press("+")
    assert rig.system.controls.rate("feed") == pytest.approx(20.0)
    assert rig.presenter.message == "feed: 20 events/s"
    rig.step(0.1)  # the poll scheduled before the key, at the old interval
    calls = rig.source.calls
    rig.step(0.05)
    rig.step(0.05)
    assert rig.source.calls == calls + 2  # one poll every 0.05 s now
    rig.presenter.press("-")
    rig.presenter.press("-")
    assert rig.system.controls.rate("feed") == pytest.approx(5.0)


def test_f_floods_the_channel_past_its_capacity(rig: Rig) -> None:
    rig.select("feed")
    rig.release.clear()  # the consumer holds its first event: the channel fills up
    rig.presenter.press("f")
    flood = CAPACITY + CAPACITY // 2
    assert rig.presenter.message == f"flooding work: feed sends {flood} events at once"
    assert rig.clock.wait_for_timers(1)
    rig.clock.advance(0.1)
    wait_for(lambda: rig.system.metrics().channel("work").unsettled == CAPACITY)
    wait_for(lambda: not rig.system.health().ok, message="a full channel is not a problem?")
    assert f"channel 'work' is full ({CAPACITY}/{CAPACITY})" in rig.system.health().problems
    rig.release.set()
    wait_for(lambda: rig.system.metrics().actor("worker").handled == flood)
    assert rig.source.calls == flood
    assert rig.system.metrics().channel("work").dropped == 0


def test_f_on_a_consumer_floods_through_the_producer_of_its_channel(rig: Rig) -> None:
    rig.presenter.press("f")
    assert "feed sends" in rig.presenter.message


def test_producer_keys_on_a_consumer_say_what_to_select(rig: Rig) -> None:
    rig.presenter.press("p")
    assert "select one with tab" in rig.presenter.message
    assert not rig.system.controls.paused("feed")


def test_q_asks_once_for_a_drain(rig: Rig) -> None:
    rig.presenter.press("q")
    assert rig.quits == 1
    assert "draining" in rig.presenter.message


def test_the_key_line_shows_an_action_then_the_keys_again(rig: Rig) -> None:
    rig.presenter.press("p")
    now = rig.clock.monotonic()
    metrics = rig.system.metrics()
    assert "select one with tab" in rig.presenter.render(metrics, now).plain
    assert rig.presenter.render(metrics, now + 10).plain.startswith("keys tab select")


def test_keys_are_drawn_only_when_they_can_be_read(rig: Rig) -> None:
    def screen(presenter: Presenter) -> str:
        console = Console(record=True, width=100, file=io.StringIO(), color_system=None)
        view = Dashboard(rig.system, console=console, presenter=presenter)
        console.print(view.render())
        return console.export_text()

    without = screen(rig.presenter)  # fd=None: stdin is no terminal
    assert "keys tab select" not in without
    assert "▸" not in without
    master, slave = os.openpty()
    try:
        with_keys = screen(Presenter(rig.system, rig.quit, rig.clock.monotonic, fd=slave))
    finally:
        os.close(master)
        os.close(slave)
    assert "keys tab select" in with_keys
    assert "▸ worker" in with_keys
