"""The one run loop: first signal drains, second stops at once, final state on return."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pykka
import pytest

import reactor
from reactor import Event, Topology
from reactor.runtime.serve import ExitCode, ProcessSignals, serve
from reactor.runtime.system import System
from reactor.runtime.worker import run_worker
from reactor.testing import wait_for


class FakeSignals:
    """A signal source the test fires by hand; records that serve uninstalled it."""

    def __init__(self) -> None:
        self._on_signal: Callable[[], None] | None = None
        self.installed = threading.Event()
        self.uninstalled = threading.Event()

    def install(self, on_signal: Callable[[], None]) -> Callable[[], None]:
        self._on_signal = on_signal
        self.installed.set()
        return self.uninstalled.set

    def send(self) -> None:
        assert self._on_signal is not None, "serve has not installed its handler"
        self._on_signal()


class Blocking:
    """A handler that holds the event it got until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.handled: list[object] = []

    def __call__(self, event: Event) -> None:
        self.entered.set()
        self.release.wait(30)
        self.handled.append(event.data)


class Served:
    """``serve`` in a thread; what it returned and the state the system had then."""

    def __init__(self, system: System, **options: object) -> None:
        self.code: ExitCode | None = None
        self.state_on_return = ""
        self.stopping: list[bool] = []
        self.returned = threading.Event()

        def run() -> None:
            self.code = serve(system, on_stopping=self.stopping.append, **options)  # type: ignore[arg-type]
            self.state_on_return = system.state
            self.returned.set()

        self.thread = threading.Thread(target=run)
        self.thread.start()


@pytest.fixture
def blocking() -> Iterator[Blocking]:
    handler = Blocking()
    yield handler
    handler.release.set()
    # An abandoned consumer ends when its handler returns; it reads no more of its
    # mailbox, so the shared teardown's stop_all must not find it still registered.
    wait_for(lambda: not pykka.ActorRegistry.get_all(), message="an actor outlived its system")


def start_blocked(handler: Blocking) -> System:
    topo = Topology("served")
    topo.channel("jobs")
    topo.consumer("slow", handler, channel="jobs")
    system = topo.start()
    system.publish("jobs", "jobs.new", 1)
    assert handler.entered.wait(10)
    return system


def test_the_first_signal_drains_what_is_in_flight(blocking: Blocking) -> None:
    system = start_blocked(blocking)
    signals = FakeSignals()
    served = Served(system, signals=signals, drain_timeout=30)
    assert signals.installed.wait(10)
    signals.send()
    wait_for(lambda: system.state == "stopping", message="the signal started no stop")
    assert not served.returned.is_set()  # the drain waits for the handler
    blocking.release.set()
    assert served.returned.wait(10)
    served.thread.join()
    assert served.code is ExitCode.OK
    assert served.state_on_return == "stopped"
    assert blocking.handled == [1]
    assert served.stopping == [False]
    assert signals.uninstalled.is_set()


def test_a_second_signal_stops_at_once_and_returns_stopped(blocking: Blocking) -> None:
    system = start_blocked(blocking)
    signals = FakeSignals()
    # Without the second signal this drain would wait for the handler for 24 s.
    served = Served(system, signals=signals, drain_timeout=30, hurry_timeout=0.5)
    assert signals.installed.wait(10)
    signals.send()
    wait_for(lambda: system.state == "stopping", message="the signal started no stop")
    signals.send()
    assert served.returned.wait(10), "the second signal did not stop the system at once"
    served.thread.join()
    assert served.code is ExitCode.OK
    assert served.state_on_return == "stopped"
    assert served.stopping == [False, True]
    assert blocking.handled == []  # abandoned, not waited for


def test_the_end_of_duration_stops_gracefully() -> None:
    topo = Topology("timed")
    topo.channel("jobs")
    handled: list[object] = []
    topo.consumer("x", lambda e: handled.append(e.data), channel="jobs")
    topo.producer("feed", channel="jobs", topic="jobs.new", source=range(50))
    system = topo.start()
    stopping: list[bool] = []
    code = serve(system, duration=0.2, signals=FakeSignals(), on_stopping=stopping.append)
    assert (code, system.state, stopping) == (ExitCode.OK, "stopped", [False])
    assert sorted(handled) == list(range(50))  # the producer's whole source, drained


def test_a_root_that_gives_up_ends_the_loop_with_failed() -> None:
    topo = Topology("doomed", strategy=reactor.OneForOne(max_restarts=0))
    topo.channel("jobs")

    def explode(event: Event) -> None:
        raise RuntimeError("always fails")

    # failure_threshold=1: every failed event is a consumer failure (let it crash)
    topo.consumer("explode", explode, channel="jobs", failure_threshold=1)
    topo.producer("feed", channel="jobs", topic="jobs.new", source=[1])
    system = topo.start()
    stopping: list[bool] = []
    code = serve(system, signals=FakeSignals(), on_stopping=stopping.append)
    assert (code, system.state, stopping) == (ExitCode.FAILED, "failed", [])
    with pytest.raises(reactor.SupervisorEscalation):
        system.wait(0)


def test_stop_from_elsewhere_ends_the_loop() -> None:
    topo = Topology("stopped")
    topo.channel("jobs")
    topo.consumer("x", lambda e: None, channel="jobs")
    system = topo.start()
    signals = FakeSignals()
    served = Served(system, signals=signals)
    assert signals.installed.wait(10)
    system.stop()
    assert served.returned.wait(10)
    served.thread.join()
    assert (served.code, served.state_on_return, served.stopping) == (ExitCode.OK, "stopped", [])


def test_run_worker_serves_with_the_same_loop(blocking: Blocking) -> None:
    topo = Topology("worker")
    topo.channel("jobs")
    topo.consumer("slow", blocking, channel="jobs")
    topo.producer("feed", channel="jobs", topic="jobs.new", source=[1])
    signals = FakeSignals()
    codes: list[ExitCode] = []
    runner = threading.Thread(
        target=lambda: codes.append(run_worker(topo, "slow,feed", signals=signals))
    )
    runner.start()
    assert blocking.entered.wait(10)
    assert signals.installed.wait(10)
    signals.send()
    signals.send()
    runner.join(10)
    assert not runner.is_alive(), "run_worker ignored the second signal"
    assert codes == [ExitCode.OK]


def test_run_worker_exits_usage_on_a_bad_only() -> None:
    topo = Topology("worker")
    topo.channel("jobs")
    topo.consumer("x", lambda e: None, channel="jobs")
    assert run_worker(topo, "nobody", signals=FakeSignals()) is ExitCode.USAGE


def test_process_signals_are_not_installed_off_the_main_thread() -> None:
    uninstalls: list[Callable[[], None]] = []
    worker = threading.Thread(target=lambda: uninstalls.append(ProcessSignals().install(print)))
    worker.start()
    worker.join()
    import signal  # noqa: PLC0415 - only this test looks at the handlers

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    uninstalls[0]()  # a no-op, and harmless


def test_exit_codes() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4]


def test_a_signal_during_the_drain_at_the_end_of_duration_stops_at_once(
    blocking: Blocking,
) -> None:
    system = start_blocked(blocking)
    signals = FakeSignals()
    served = Served(system, signals=signals, duration=0, drain_timeout=30, hurry_timeout=0.5)
    wait_for(lambda: system.state == "stopping", message="the end of duration started no stop")
    signals.send()
    assert served.returned.wait(10), "the signal did not cut the drain short"
    served.thread.join()
    assert (served.code, served.state_on_return, served.stopping) == (
        ExitCode.OK,
        "stopped",
        [False, True],
    )


# -- what a drain waits for, what it abandons, brokers out of reach ----------------------


def test_a_drain_says_what_it_waits_for(blocking: Blocking) -> None:
    system = start_blocked(blocking)
    signals = FakeSignals()
    waits: list[tuple[str, ...]] = []
    served = Served(
        system, signals=signals, drain_timeout=30, on_waiting=waits.append, waiting_interval=0.05
    )
    assert signals.installed.wait(10)
    signals.send()
    wait_for(lambda: waits, message="the drain never said what it waits for")
    assert "consumer 'slow' holds 1 event(s)" in waits[0][0]
    assert any("channel 'jobs' holds 1 unsettled event(s)" in line for line in waits[0])
    blocking.release.set()
    assert served.returned.wait(10)
    served.thread.join()
    assert served.code is ExitCode.OK


def test_a_drain_that_times_out_returns_abandoned(blocking: Blocking) -> None:
    system = start_blocked(blocking)
    system.publish("jobs", "jobs.new", 2)  # waits behind the first
    served = Served(system, signals=FakeSignals(), duration=0, drain_timeout=0.5)
    assert served.returned.wait(20)
    served.thread.join()
    assert served.code is ExitCode.ABANDONED
    assert system.abandoned == 2
    assert served.state_on_return == "stopped"


def test_waiting_on_lists_holders_and_unsettled_channels_only() -> None:
    from reactor.runtime.serve import waiting_on  # noqa: PLC0415 - one test needs it

    topo = Topology("idle")
    topo.channel("jobs")
    topo.consumer("c", lambda event: None, channel="jobs")
    with topo.start() as system:
        assert waiting_on(system.metrics()) == ()


def test_a_channel_that_never_reaches_redis_stops_the_run_after_connect_timeout(
    unused_port: int,
) -> None:
    pytest.importorskip("redis")
    topo = Topology("unreachable")
    topo.channel("jobs", backend=f"redis://:hunter2@127.0.0.1:{unused_port}/0?block_ms=50")
    topo.consumer("c", lambda event: None, channel="jobs")
    system = topo.start()
    told: list[tuple[str, ...]] = []
    code = serve(system, signals=FakeSignals(), connect_timeout=0.2, on_unreachable=told.append)
    assert code is ExitCode.UNREACHABLE
    assert system.state == "stopped"
    assert len(told) == 1
    assert f"channel 'jobs' cannot reach Redis at redis://127.0.0.1:{unused_port}/0" in told[0][0]
    assert "hunter2" not in told[0][0]


def test_without_connect_timeout_an_unreachable_broker_is_waited_for(unused_port: int) -> None:
    pytest.importorskip("redis")
    topo = Topology("patient")
    topo.channel("jobs", backend=f"redis://127.0.0.1:{unused_port}/0?block_ms=50")
    topo.consumer("c", lambda event: None, channel="jobs")
    system = topo.start()
    assert system.unreachable()  # the channel knows at once
    code = serve(system, signals=FakeSignals(), duration=0.2, drain_timeout=0.5)
    assert code is ExitCode.OK


@pytest.fixture
def unused_port() -> int:
    import socket  # noqa: PLC0415 - only these tests need a port where nothing listens

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_wait_idle_after_stop_raises_at_once() -> None:
    topo = Topology("stopped")
    topo.channel("jobs")
    topo.consumer("c", lambda event: None, channel="jobs")
    system = topo.start()
    system.stop()
    with pytest.raises(reactor.SystemStoppedError, match="is stopped; wait_idle\\(\\) before stop"):
        system.wait_idle(timeout=3600)  # would wait an hour if it waited at all


def test_wait_idle_raises_when_the_system_stops_while_it_waits(blocking: Blocking) -> None:
    system = start_blocked(blocking)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            system.wait_idle(timeout=3600)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    system.stop(timeout=0.5, drain=False)
    waiter.join(10)
    assert not waiter.is_alive(), "wait_idle() kept waiting on a stopped system"
    assert len(errors) == 1
    assert isinstance(errors[0], reactor.SystemStoppedError)
