"""A poison event, written once and run on every backend.

An event whose handler always raises is retried up to ``max_deliveries`` times,
then dead-lettered once with its error and attempts; the events around it are
handled, and the system keeps running.
"""

from __future__ import annotations

from support import backend

from reactor import Event, Topology
from reactor.testing import Recorder, wait_for

__all__ = ["backend"]  # the fixture, imported for pytest


def test_a_poison_event_is_dead_lettered_once_and_the_rest_flow(backend: str) -> None:
    handled, dead = Recorder(), Recorder()

    def handle(event: Event) -> None:
        if event.data == "poison":
            raise RuntimeError("cannot handle poison")
        handled(event)

    topo = Topology("poison")
    topo.channel("c", backend=backend)
    topo.consumer("x", handle, channel="c", max_deliveries=3)
    topo.consumer("dead", dead, channel="$system", pattern="$deadletter")
    with topo.start() as system:
        for n in range(5):
            system.publish("c", "t.x", n)
        poison = system.publish("c", "t.x", "poison")
        for n in range(5, 10):
            system.publish("c", "t.x", n)
        dead.wait_for_count(1)
        system.wait_idle(10)
        # The last failed attempt restarts the consumer; the system settles back to ok.
        wait_for(lambda: system.health().status == "ok", message=str(system.health()))
        assert system.metrics().group("c", "x").dead_lettered == 1
    assert sorted(handled.data()) == list(range(10))
    (letter,) = [event.data for event in dead.events]
    assert letter["event"].id == poison.id
    assert (letter["error_type"], letter["attempts"]) == ("RuntimeError", 3)
    assert "cannot handle poison" in letter["message"]
    assert (letter["consumer"], letter["group"], letter["channel"]) == ("x", "x", "c")
