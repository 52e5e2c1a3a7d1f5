"""Many actors: thousands of consumers start, work and stop, leaving no thread behind.

Also the pieces that make that cheap and safe: the system's thread list sweeps ended
threads in amortised O(1) and loses none to concurrent starts; a supervisor stopped
(or abandoned by its parent) in the middle of starting its children starts no more
of them; a child's start is bounded by its own ``start_timeout``.

The large runs are ``soak`` (REACTOR_SOAK=1 runs 10,000 consumers); the default
sizes keep the suite fast.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Any

import pykka
import pytest

from reactor import Event, OneForOne, Topology
from reactor.actors.address import Address, Answer
from reactor.actors.base import ActorContext, ActorThreads, ReactorActor, reactor_threads
from reactor.errors import SupervisorEscalation
from reactor.supervision.supervisor import ChildSpec, Supervisor, SupervisorConfig
from reactor.testing import FakeClock, wait_for

TIMEOUT = 10.0
SOAK = bool(os.environ.get("REACTOR_SOAK"))


# -- the thread list ----------------------------------------------------------------


def _ended_thread() -> threading.Thread:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    return thread


def test_the_thread_list_forgets_ended_threads_and_keeps_live_ones() -> None:
    threads = ActorThreads()
    release = threading.Event()
    live = [threading.Thread(target=release.wait) for _ in range(3)]
    for thread in live:
        thread.start()
        threads.add(thread)
    try:
        for _ in range(200):
            threads.add(_ended_thread())
        assert all(thread in threads for thread in live)
        # Swept when it doubled: never more than about twice what it must hold.
        assert len(threads) < 2 * 200
        assert sum(1 for thread in threads if thread.is_alive()) == 3
    finally:
        release.set()
        for thread in live:
            thread.join(TIMEOUT)


def test_threads_added_from_many_threads_at_once_are_all_kept() -> None:
    threads = ActorThreads()
    release = threading.Event()
    adders = 4
    per_adder = 100
    start = threading.Barrier(adders)

    def add_many() -> None:
        start.wait(TIMEOUT)
        for _ in range(per_adder):
            thread = threading.Thread(target=release.wait)
            thread.start()
            threads.add(thread)
            threads.add(_ended_thread())  # sweeps run meanwhile

    workers = [threading.Thread(target=add_many) for _ in range(adders)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIMEOUT)
    try:
        assert sum(1 for thread in threads if thread.is_alive()) == adders * per_adder
    finally:
        release.set()
        for thread in list(threads):
            thread.join(TIMEOUT)


# -- the light future of a join --------------------------------------------------------


def test_an_answer_gives_its_value_to_every_getter_once_set() -> None:
    answer: Answer[int] = Answer()
    got: list[int] = []
    getters = [threading.Thread(target=lambda: got.append(answer.get(timeout=TIMEOUT)))]
    getters.append(threading.Thread(target=lambda: got.append(answer.get(timeout=TIMEOUT))))
    for getter in getters:
        getter.start()
    answer.set(7)
    for getter in getters:
        getter.join(TIMEOUT)
    assert got == [7, 7]
    assert answer.get(timeout=0) == 7
    with pytest.raises(queue.Full):
        answer.set(8)  # set once, as pykka's futures


def test_an_answer_times_out_and_raises_what_the_actor_raised() -> None:
    answer: Answer[int] = Answer()
    with pytest.raises(pykka.Timeout):
        answer.get(timeout=0.01)
    try:
        raise KeyError("no such group")
    except KeyError:
        answer.set_exception(sys.exc_info())
    with pytest.raises(KeyError, match="no such group"):
        answer.get(timeout=TIMEOUT)


def test_an_ask_answer_is_answered_by_a_reactor_actor() -> None:
    class Echo(ReactorActor):
        def on_receive(self, message: Any) -> Any:
            if message == "boom":
                raise ValueError("boom")
            return message * 2

    address = Address("echo")
    echo = Echo.spawn(ActorContext(address, FakeClock()))
    try:
        assert address.ask_answer(21).get(timeout=TIMEOUT) == 42
        with pytest.raises(ValueError, match="boom"):
            address.ask_answer("boom").get(timeout=TIMEOUT)
    finally:
        echo.request_stop()
        assert echo.join(TIMEOUT)


# -- a supervisor stopped while it starts its children -------------------------------


class Blocker(ReactorActor):
    """A child whose on_start waits for ``release``; records who started."""

    def __init__(self, context: ActorContext, started: list[str], release: threading.Event) -> None:
        super().__init__(context)
        self.started = started
        self.release = release

    def on_start(self) -> None:
        self.started.append(self.actor_address.name)
        if self.actor_address.name == "gate":
            self.release.wait(TIMEOUT)


def _child(name: str, started: list[str], release: threading.Event, **options: Any) -> ChildSpec:
    return ChildSpec(name, start=lambda ctx: Blocker.spawn(ctx, started, release), **options)


def test_a_supervisor_stopped_while_starting_its_children_starts_no_more() -> None:
    started: list[str] = []
    release = threading.Event()
    children = tuple(_child(name, started, release) for name in ("a", "gate", "c"))
    sup = Supervisor.spawn(
        ActorContext(Address("sup"), FakeClock()), SupervisorConfig("sup", OneForOne(), children)
    )
    wait_for(lambda: "gate" in started, TIMEOUT, message="gate never started")
    sup.request_stop()
    release.set()
    assert sup.join(TIMEOUT)
    assert started == ["a", "gate"]
    assert not [t for t in reactor_threads() if t.name.startswith("reactor:")]


def test_a_subtree_whose_start_times_out_is_abandoned_and_stops_starting() -> None:
    # The parent waits start_timeout for the subtree, gives up on it (fences it) and
    # escalates; the abandoned subtree must then stop, not start the rest or loop.
    started: list[str] = []
    release = threading.Event()
    escalated = threading.Event()
    inner = SupervisorConfig(
        "inner",
        OneForOne(),
        tuple(_child(name, started, release) for name in ("gate", "c")),
    )
    subtree = ChildSpec(
        "inner",
        start=lambda ctx: Supervisor.spawn(ctx, inner),
        kind="supervisor",
        start_timeout=0.2,
    )
    outer = SupervisorConfig(
        "outer",
        OneForOne(max_restarts=0),
        (subtree,),
        on_escalate=lambda exc: escalated.set(),
    )
    sup = Supervisor.spawn(ActorContext(Address("outer"), FakeClock()), outer)
    with pytest.raises(SupervisorEscalation, match="Timeout"):
        sup.actor_started.get(timeout=TIMEOUT)
    assert escalated.is_set()
    release.set()
    wait_for(lambda: not reactor_threads(), TIMEOUT, message="the abandoned subtree kept running")
    assert started == ["gate"]


# -- thousands of consumers ----------------------------------------------------------


@pytest.mark.parametrize("shared_group", [False, True], ids=["own-groups", "one-group"])
def test_many_consumers_start_handle_and_stop_leaving_no_thread(shared_group: bool) -> None:
    count = 300
    _run_many(count, shared_group)


@pytest.mark.soak
@pytest.mark.timeout(600)
@pytest.mark.parametrize("shared_group", [False, True], ids=["own-groups", "one-group"])
def test_ten_thousand_consumers_soak(shared_group: bool) -> None:
    if not SOAK:
        pytest.skip("set REACTOR_SOAK=1 for 10,000 consumers")
    _run_many(10_000, shared_group)


def _run_many(count: int, shared_group: bool) -> None:
    handled: set[str] = set()
    lock = threading.Lock()

    def handle(event: Event) -> None:
        with lock:
            handled.add(event.data["to"] if shared_group else threading.current_thread().name)

    topo = Topology("many")
    topo.channel("c", capacity=max(1000, count))
    options = {"group": "all"} if shared_group else {}
    for index in range(count):
        topo.consumer(f"c{index}", handle, channel="c", **options)
    system = topo.start()
    try:
        states = {m.name: m.state for m in system.metrics().actors}
        assert all(states[f"c{index}"] == "running" for index in range(count))
        if shared_group:  # one group: each event goes to one member; all are handled
            for index in range(count):
                system.publish("c", "scale.ping", {"to": str(index)})
            expected = count
        else:  # a group per consumer: one event reaches every consumer, each on its thread
            system.publish("c", "scale.ping", {"to": "all"})
            expected = count
        system.wait_idle(60)
        assert len(handled) == expected
    finally:
        system.stop(timeout=60)
    assert system.state == "stopped"
    assert not reactor_threads()
