"""Run a started system until it is told to stop: the one loop behind every face.

:meth:`System.run_forever <reactor.System.run_forever>`, ``reactor run``,
``reactor demo``, ``reactor worker`` and :func:`~reactor.runtime.worker.run_worker`
all call :func:`serve`, so they stop alike:

* the first stop signal (SIGINT or SIGTERM), or the end of ``duration``, starts a
  graceful stop: producers stop, in-flight events are drained, then everything stops;
* a signal while that stop runs (the second one) cuts the drain short and stops
  at once (``hurry_timeout``);
* the system stopping on its own (the root supervisor gave up) ends the loop too;
* with ``connect_timeout``, a channel that has not reached its broker that long
  after the start stops the system at once: nothing could flow.

While a graceful stop drains, ``on_waiting`` is told every few seconds what it
still waits for (:func:`waiting_on`): which consumer holds how many events, which
channel holds unsettled ones. A drain cut short by ``drain_timeout`` leaves
events unhandled; :attr:`ExitCode.ABANDONED` says so.

:func:`serve` returns only once the system's state is final (``stopped`` or
``failed``), and says which with an :class:`ExitCode`, the process exit codes of
the command line.
"""

from __future__ import annotations

import contextlib
import enum
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from reactor.errors import SupervisorEscalation

if TYPE_CHECKING:
    from reactor.runtime.metrics import SystemMetrics
    from reactor.runtime.system import System

__all__ = ["ExitCode", "ProcessSignals", "SignalSource", "serve", "waiting_on"]

#: The signals that stop a served system.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# What ends one wait of the loop.
_SIGNAL, _DONE, _DEADLINE = "signal", "done", "deadline"
# The kernel may hand a process signal to any thread; then the main thread's wait
# is not interrupted, and Python runs the handler only at the main thread's next
# bytecode. Waiting in slices this long bounds that delay.
_SIGNAL_LATENCY_S = 0.1
# How often a drain says what it still waits for.
WAITING_INTERVAL_S = 2.0
# Kinds of actor whose held events a drain waits for.
_HANDLER_KINDS = ("consumer", "member")


class ExitCode(enum.IntEnum):
    """How a served system (and the ``reactor`` command) ended.

    A stop asked for by a signal is a success, also when a second signal cut the
    drain short: the process did what it was told. Shell-style 128+N codes are for
    processes a signal killed, which a served system is not.
    """

    OK = 0
    """Stopped as asked: a signal, the end of ``--duration``, or ``stop()``."""
    FAILED = 1
    """The root supervisor gave up (restart intensity exceeded up to the root)."""
    USAGE = 2
    """A bad command line, target or topology, or a channel that cannot be opened
    (a missing folder, a locked log, the redis extra missing); nothing ran."""
    UNREACHABLE = 3
    """A channel could not reach its broker (Redis) within ``connect_timeout``;
    the system was stopped at once, nothing was handled."""
    ABANDONED = 4
    """The graceful stop's drain timed out with events unhandled (a handler hung).
    A durable channel delivers them again at the next start; a memory channel lost them."""


class SignalSource(Protocol):
    """Where stop requests come from; tests pass a fake one."""

    def install(self, on_signal: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_signal`` on every stop request from now on.

        ``on_signal`` may run in any thread, and for process signals in the main
        thread between two bytecodes; it is reentrant (it only queues the request).

        Returns:
            A function that uninstalls what ``install`` set up.
        """
        ...


class ProcessSignals:
    """SIGINT and SIGTERM of this process.

    Python runs signal handlers in the main thread only, so when :func:`serve`
    runs in another thread nothing is installed and only ``duration`` or
    ``stop()`` end it.
    """

    def __init__(self, signals: Sequence[signal.Signals] = STOP_SIGNALS) -> None:
        self._signals = tuple(signals)

    def install(self, on_signal: Callable[[], None]) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handle(signum: int, frame: FrameType | None) -> None:
            on_signal()

        previous = {signum: signal.signal(signum, handle) for signum in self._signals}

        def uninstall() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return uninstall


def serve(
    system: System,
    *,
    duration: float | None = None,
    drain_timeout: float = 30.0,
    hurry_timeout: float = 1.0,
    on_stopping: Callable[[bool], None] | None = None,
    signals: SignalSource | None = None,
    connect_timeout: float | None = None,
    on_unreachable: Callable[[tuple[str, ...]], None] | None = None,
    on_waiting: Callable[[tuple[str, ...]], None] | None = None,
    waiting_interval: float = WAITING_INTERVAL_S,
) -> ExitCode:
    """Run ``system`` until a stop signal, ``duration``, or it stops on its own.

    Args:
        system: a started system.
        duration: seconds to run before a graceful stop; None runs until a signal.
        drain_timeout: seconds the graceful stop may take.
        hurry_timeout: seconds the stop at once (second signal) may take.
        on_stopping: told ``False`` when the graceful stop begins and ``True`` when
            a second signal stops at once; faces use it to say so. It runs in the
            thread that called :func:`serve`.
        signals: where stop requests come from (default: this process's SIGINT
            and SIGTERM, when called from the main thread).
        connect_timeout: seconds after which a channel that has not yet reached
            its broker (:meth:`System.unreachable`) stops the system at once;
            None waits for the broker as long as the run lasts. A run that ends
            before any broker was reached counts as unreachable too.
        on_unreachable: told why (one line per channel) when ``connect_timeout``
            gives up, in the thread that called :func:`serve`.
        on_waiting: told, every ``waiting_interval`` seconds of a graceful
            stop, what the drain still waits for (:func:`waiting_on`).
        waiting_interval: seconds between two ``on_waiting`` calls.

    Returns:
        :attr:`ExitCode.OK` after a stop, :attr:`ExitCode.FAILED` if the root
        supervisor gave up, :attr:`ExitCode.UNREACHABLE` if ``connect_timeout``
        gave up, :attr:`ExitCode.ABANDONED` if the drain timed out with events
        unhandled. Whatever it returns, the system's state is final.

    Thread-safety: call it from one thread per system; signals may arrive in any.
    """
    source = signals if signals is not None else ProcessSignals()
    # Everything that can end a wait arrives on this queue. A process signal handler
    # runs in the main thread between two bytecodes, perhaps while that thread holds
    # a lock, so it may only do what is reentrant: SimpleQueue.put is, Event.set and
    # a Lock are not.
    wakeups: queue.SimpleQueue[str] = queue.SimpleQueue()

    def on_signal() -> None:
        wakeups.put(_SIGNAL)

    def watch() -> None:
        # Only ends the loop: the exit code comes from the final state.
        with contextlib.suppress(SupervisorEscalation):
            system.wait(None)
        wakeups.put(_DONE)

    started = time.monotonic()
    deadline = None if duration is None else started + duration
    watcher = threading.Thread(target=watch, name="reactor:serve-watch", daemon=True)
    stopper: threading.Thread | None = None
    hurried = False
    done = False
    # Whether every channel has reached its broker once; until then connect_timeout runs.
    reached = connect_timeout is None
    gave_up = False
    reasons: tuple[str, ...] = ()  # why channels were unreachable at the last look
    next_report = 0.0
    uninstall = source.install(on_signal)
    try:
        watcher.start()
        while not done:
            now = time.monotonic()
            if not reached and not gave_up:
                reasons = system.unreachable()
                reached = not reasons
                assert connect_timeout is not None
                if reasons and now - started >= connect_timeout and system.state == "running":
                    gave_up = True
                    if on_unreachable is not None:
                        on_unreachable(reasons)
                    system.stop(timeout=hurry_timeout, drain=False)
            draining = stopper is not None and stopper.is_alive() and not hurried
            if draining and on_waiting is not None and now >= next_report:
                if next_report:  # not at once: most drains finish in a moment
                    on_waiting(waiting_on(system.metrics()))
                next_report = now + waiting_interval
            timed = stopper is None and deadline is not None
            try:
                wakeup = wakeups.get(
                    timeout=min(_SIGNAL_LATENCY_S, _left(deadline)) if timed else _SIGNAL_LATENCY_S
                )
            except queue.Empty:
                if not (timed and _left(deadline) == 0):
                    continue
                wakeup = _DEADLINE
            if wakeup == _DONE:
                done = True
            elif stopper is None:
                if on_stopping is not None:
                    on_stopping(False)
                # The drain runs beside this loop, so a second signal is seen meanwhile.
                stopper = threading.Thread(
                    target=system.stop,
                    kwargs={"timeout": drain_timeout},
                    name="reactor:serve-drain",
                    daemon=True,
                )
                stopper.start()
            elif wakeup == _SIGNAL and not hurried:
                # A signal while the graceful stop runs (after a first signal or the
                # end of ``duration``) stops at once.
                hurried = True
                if on_stopping is not None:
                    on_stopping(True)
                system.stop(timeout=hurry_timeout, drain=False)
    finally:
        uninstall()
        if not done:  # an exception (such as KeyboardInterrupt) got here
            system.stop(timeout=hurry_timeout, drain=False)
        if stopper is not None:
            stopper.join(drain_timeout)
        watcher.join(hurry_timeout)
    if system.state == "failed":
        return ExitCode.FAILED
    if not reached and not gave_up and not hurried and reasons:
        # The run ended (--duration) before a broker was ever reached: nothing flowed.
        gave_up = True
        if on_unreachable is not None:
            on_unreachable(reasons)
    if gave_up:
        return ExitCode.UNREACHABLE
    if system.abandoned:
        return ExitCode.ABANDONED
    return ExitCode.OK


def waiting_on(metrics: SystemMetrics) -> tuple[str, ...]:
    """What a draining system still waits for, one line each, for a face to show.

    Args:
        metrics: a snapshot of the draining system.

    Returns:
        ``consumer 'bill' holds 1 event (handled 41)`` for each consumer or pool
        member holding events, then ``channel 'orders' holds 12 unsettled events``
        for each channel holding some; empty when nothing is left.
    """
    lines = [
        f"{actor.kind} {actor.name!r} holds {actor.in_flight} event(s) "
        f"(handled {actor.handled}, state {actor.state})"
        for actor in metrics.actors
        if actor.kind in _HANDLER_KINDS and actor.in_flight
    ]
    lines += [
        f"channel {channel.name!r} holds {channel.unsettled} unsettled event(s)"
        for channel in metrics.channels
        if channel.unsettled and not channel.name.startswith("$")
    ]
    return tuple(lines)


def _left(deadline: float | None) -> float:
    if deadline is None:
        return 0.0
    return max(0.0, deadline - time.monotonic())
