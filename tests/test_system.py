"""The System's face: public names, metrics, health, lifecycle and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import attrs
import pytest

import reactor
from reactor import Topology
from reactor.testing import Recorder, wait_for


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(reactor) if not name.startswith("_")}
    # Modules and the __future__ import are not API.
    modules = {
        name for name in public if type(getattr(reactor, name)).__name__ in ("module", "_Feature")
    }
    assert len(set(reactor.__all__)) == len(reactor.__all__), "a name is listed twice"
    assert set(reactor.errors.__all__) <= set(reactor.__all__), "every error is public"
    assert set(reactor.__all__) - {"__version__"} == public - modules


def test_every_error_is_a_reactor_error_and_a_builtin() -> None:
    for name in reactor.__all__:
        value = getattr(reactor, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, reactor.ReactorError)
            if value is not reactor.ReactorError and value is not reactor.BackpressureError:
                assert len(value.__mro__) > 4, f"{name} should also subclass a fitting built-in"


def test_metrics_are_a_frozen_snapshot() -> None:
    topo = Topology("metrics")
    topo.channel("c")
    topo.consumer("x", Recorder(), channel="c")
    with topo.start() as system:
        for n in range(10):
            system.publish("c", "t.x", n)
        system.wait_idle(5)
        snapshot = system.metrics()
        system.publish("c", "t.x", 10)
        system.wait_idle(5)
        assert snapshot.channel("c").published == 10
        assert system.metrics().channel("c").published == 11
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            snapshot.state = "x"  # type: ignore[misc]
        consumer = snapshot.actor("x")
        assert (consumer.kind, consumer.state, consumer.handled, consumer.supervisor) == (
            "consumer",
            "running",
            10,
            "$consumers",
        )
        assert consumer.latency.count == 10
        assert snapshot.to_dict()["channels"][0]["name"] == "c"
        kinds = {a.name: a.kind for a in snapshot.actors}
        assert kinds["channel:c"] == "channel"
        assert kinds["$root"] == "supervisor"


def test_health_reports_what_is_wrong() -> None:
    topo = Topology("health")
    topo.channel("c", capacity=1)
    gate = threading.Event()
    topo.consumer("x", lambda e: gate.wait(10), channel="c")
    system = topo.start()
    try:
        assert system.health().ok
        system.publish("c", "t.x", 1)
        health = system.health()
        assert health.status == "degraded"
        assert "channel 'c' is full (1/1)" in health.problems
    finally:
        gate.set()
        system.stop()
    assert system.health().status == "stopped"


def test_a_system_starts_once() -> None:
    topo = Topology("once")
    topo.channel("c")
    system = topo.start()
    system.stop()
    with pytest.raises(reactor.SystemStoppedError, match="already started"):
        system.start()
    system.stop()  # stopping twice is harmless


def test_invalid_topology_starts_nothing() -> None:
    topo = Topology("invalid")
    topo.consumer("x", Recorder(), channel="missing")
    before = threading.active_count()
    with pytest.raises(reactor.TopologyError, match="unknown channel 'missing'"):
        topo.start()
    assert threading.active_count() == before


def test_a_start_that_raises_leaves_a_failed_system_that_says_why(tmp_path: Path) -> None:
    topo = Topology("nofolder")
    topo.channel("log", backend=f"sqlite:///{tmp_path / 'missing' / 'log.db'}")
    system = reactor.System(topo)
    with pytest.raises(reactor.ReactorError, match="does not exist"):
        system.start()
    assert system.state == "failed"
    health = system.health()
    assert health.status == "failed"
    assert health.problems[0].startswith("start failed: ")
    assert "does not exist" in health.problems[0]
    system.stop(timeout=1.0)  # nothing runs: returns at once, without raising
    assert system.wait(timeout=0)
    with pytest.raises(reactor.SystemStoppedError, match="already started"):
        system.start()


def test_lifecycle_events_can_be_consumed_like_any_topic() -> None:
    topo = Topology("watch")
    topo.channel("c")
    watched = Recorder()
    topo.consumer("watch", watched, channel="$system", pattern="$system.actor.started")
    topo.consumer("x", Recorder(), channel="c")
    with topo.start() as system:
        wait_for(lambda: {"x", "channel:c"} <= {e.data["actor"] for e in watched.events})
        system.wait_idle(5)


def test_run_forever_drains_on_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(
        textwrap.dedent(
            """
            import signal
            import threading
            from reactor import Topology
            from reactor.testing import wait_for

            handled = []
            topo = Topology("service")
            topo.channel("c")
            topo.consumer("x", lambda e: handled.append(e.data), channel="c")
            system = topo.start()
            for n in range(100):
                system.publish("c", "t.x", n)

            def announce():
                # Ready once run_forever has installed its handler, not before.
                wait_for(lambda: signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)
                print("ready", flush=True)

            threading.Thread(target=announce, daemon=True).start()
            system.run_forever(drain_timeout=10)
            print("handled", len(handled), system.state, flush=True)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert out.strip() == "handled 100 stopped"


def test_only_starts_the_named_part_of_a_topology() -> None:
    topo = Topology("partial")
    topo.channel("c")
    billing, mail, audit = Recorder(), Recorder(), Recorder()
    with topo.supervisor("tree") as tree:
        tree.consumer("billing", billing, channel="c")
        tree.consumer("mail", mail, channel="c")
    topo.consumer("audit", audit, channel="c")
    topo.producer("feed", channel="c", topic="t.x", source=range(5))
    with topo.start(only={"billing", "feed"}) as system:
        billing.wait_for_count(5)
        names = {a.name for a in system.metrics().actors}
        assert {"billing", "tree", "feed"} <= names
        assert not {"mail", "audit"} & names
        system.stop(drain=False)  # mail and audit have no members here: nothing drains them
    assert len(mail) == len(audit) == 0


def test_only_rejects_unknown_names() -> None:
    topo = Topology("partial")
    topo.channel("c")
    topo.consumer("billing", Recorder(), channel="c")
    with pytest.raises(reactor.TopologyError, match="'biling'"):
        topo.start(only={"biling"})


def test_lookups_raise_reactor_errors_that_name_the_thing(tmp_path: Path) -> None:
    topo = Topology("lookups")
    topo.channel("c")
    topo.channel("log", backend=f"sqlite:///{tmp_path / 'log.db'}")
    topo.consumer("x", Recorder(), channel="c")
    topo.consumer("y", Recorder(), channel="log")
    with topo.start() as system:
        snapshot = system.metrics()
        with pytest.raises(reactor.UnknownActorError, match=r"no actor named 'nope'.*\bx\b"):
            snapshot.actor("nope")
        with pytest.raises(reactor.UnknownChannelError, match=r"no channel named 'nope'.*\bc\b"):
            snapshot.channel("nope")
        with pytest.raises(reactor.UnknownGroupError, match=r"no group 'nope' \(groups: x\)"):
            snapshot.group("c", "nope")
        with pytest.raises(reactor.UnknownChannelError, match="'nope'"):
            system.publish("nope", "t.x", 1)
        with pytest.raises(reactor.UnknownGroupError, match="'nope'"):
            system.replay("log", "nope")
        with pytest.raises(reactor.TopologyError, match="yesterday"):
            system.replay("log", "y", from_="yesterday")
    # Each is also the built-in a caller may already catch.
    assert issubclass(reactor.UnknownGroupError, LookupError)
    assert issubclass(reactor.ResultError, TypeError)
    assert issubclass(reactor.UsageError, ValueError)


def test_run_forever_stops_at_once_on_a_second_signal_and_returns_stopped(
    tmp_path: Path,
) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(
        textwrap.dedent(
            """
            import signal
            import threading
            from reactor import Topology
            from reactor.testing import wait_for

            topo = Topology("stuck")
            topo.channel("c")
            entered = threading.Event()

            def hang(event):
                entered.set()
                threading.Event().wait()  # never returns

            topo.consumer("x", hang, channel="c")
            system = topo.start()
            system.publish("c", "t.x", 1)

            def announce():
                entered.wait()
                wait_for(lambda: signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)
                print("ready", flush=True)

            threading.Thread(target=announce, daemon=True).start()
            system.run_forever(
                drain_timeout=60, on_stopping=lambda at_once: print("stopping", at_once, flush=True)
            )
            print("returned", system.state, flush=True)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline().strip() == "stopping False"
        process.send_signal(signal.SIGTERM)  # the drain would wait 48 s for the handler
        out, _ = process.communicate(timeout=15)
        assert process.returncode == 0
        assert out.split("\n")[:2] == ["stopping True", "returned stopped"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
