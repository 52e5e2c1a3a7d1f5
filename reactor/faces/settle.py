"""Ending a served system from inside the program: a key press, or a finite run settling.

:func:`~reactor.runtime.serve.serve` stops a system gracefully on a stop request
from its :class:`~reactor.runtime.serve.SignalSource`. :class:`StopRequests` is
such a source that also takes requests from this process: the presenter's ``q``
key and :class:`SettledWatch` (``--until-settled``) ask for the same drain as
Ctrl-C, so every way of ending a run ends it alike.

A topology is *settled* when every producer has run dry and every channel is
empty: everything published was handled or dead-lettered, and nothing more will
come. Only a topology whose producers all end (iterables, generator functions)
can settle; one polling a callable never runs dry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from reactor.errors import UsageError
from reactor.runtime.serve import ProcessSignals, SignalSource

if TYPE_CHECKING:
    from reactor.runtime.system import System
    from reactor.runtime.topology import Topology

__all__ = ["SettledWatch", "StopRequests", "check_settles"]

# How often the watch looks whether the system settled: a run ends this much late at most.
_LOOK_EVERY_S = 0.1


class StopRequests:
    """Stop requests from the process's signals and from :meth:`request`.

    Args:
        signals: the signals to take as well (default: SIGINT and SIGTERM).

    Thread-safety: :meth:`request` may be called from any thread.
    """

    def __init__(self, signals: SignalSource | None = None) -> None:
        self._signals = signals if signals is not None else ProcessSignals()
        self._lock = threading.Lock()
        self._on_signal: Callable[[], None] | None = None
        self._early = False  # a request made before install(): delivered by it

    def install(self, on_signal: Callable[[], None]) -> Callable[[], None]:
        uninstall = self._signals.install(on_signal)
        with self._lock:
            self._on_signal = on_signal
            early, self._early = self._early, False
        if early:
            on_signal()

        def remove() -> None:
            with self._lock:
                self._on_signal = None
            uninstall()

        return remove

    def request(self) -> None:
        """Ask for a graceful stop, as a first Ctrl-C would (a second one stops at once)."""
        with self._lock:
            on_signal = self._on_signal
            if on_signal is None:
                self._early = True
        if on_signal is not None:
            on_signal()


def check_settles(topology: Topology) -> None:
    """Refuse ``--until-settled`` for a topology that cannot settle.

    Raises:
        UsageError: a producer polls a callable, so it never runs dry.
    """
    for decl in topology.producers:
        if not isinstance(decl.source, Iterable):
            raise UsageError(
                f"--until-settled: producer {decl.name!r} polls a callable every "
                f"{decl.interval}s and never runs dry, so the run would never settle; "
                "use --duration S instead, or give it an iterable source"
            )


class SettledWatch:
    """Asks for a stop once ``system`` has settled (see the module documentation).

    Args:
        system: the running system to watch.
        on_settled: called once, when it settles while running.

    Thread-safety: :meth:`close` may be called from any thread.
    """

    def __init__(self, system: System, on_settled: Callable[[], None]) -> None:
        self._system = system
        self._on_settled = on_settled
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="reactor-settled", daemon=True)

    def start(self) -> SettledWatch:
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._closed.set()
        self._thread.join(timeout)

    def _watch(self) -> None:
        system = self._system
        while not self._closed.wait(_LOOK_EVERY_S):
            if system.state != "running":
                return  # stopping for another reason: no second request, it would hurry
            if system.is_idle(producers=True):
                self._on_settled()
                return
