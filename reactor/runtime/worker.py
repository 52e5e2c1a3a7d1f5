"""Worker processes: run part of a topology, sharing its channels through a broker.

``reactor worker app:topology --only billing,mailer`` calls :func:`run_worker`.
Several workers (on one machine or many) that run the same topology with
``redis://`` channels share its consumer groups: each event of a group is
handled by one of them, and the entries of a worker that dies are claimed by
the others once their lease has expired. Producers can run in one worker and
consumers in others.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable
from types import FrameType

from reactor.errors import SupervisorEscalation, TopologyError
from reactor.runtime.topology import Topology

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "parse_only", "run_worker"]

logger = logging.getLogger("reactor")

EXIT_OK = 0
EXIT_FAILED = 1  # the root supervisor gave up
EXIT_USAGE = 2  # the topology or ``--only`` is invalid


def parse_only(text: str | Iterable[str]) -> frozenset[str]:
    """``"billing, mailer"`` (or several such strings) as a set of names."""
    parts = [text] if isinstance(text, str) else list(text)
    return frozenset(name.strip() for part in parts for name in part.split(",") if name.strip())


def run_worker(
    topology: Topology,
    only: str | Iterable[str] | None,
    *,
    duration: float | None = None,
    drain_timeout: float = 30.0,
) -> int:
    """Run the ``only`` part of ``topology`` until SIGINT/SIGTERM or ``duration``.

    The first signal drains (in-flight events are finished and acked) and stops;
    a second one stops at once. Signal handlers are installed only when called
    from the main thread.

    Args:
        topology: the whole topology (every process declares the same one, so
            every process knows every group).
        only: names of consumers, pools, supervisors and producers to run, as
            ``"a,b"`` or an iterable; None runs everything.
        duration: stop after this many seconds; None runs until a signal.
        drain_timeout: seconds the graceful stop may take.

    Returns:
        0 after a clean stop, 1 if the root supervisor gave up, 2 if the topology
        or ``only`` is invalid (the error is logged to the ``reactor`` logger).
    """
    names = parse_only(only) if only is not None else None
    try:
        system = topology.start(only=names)
    except TopologyError as exc:
        logger.error("worker: %s", exc)
        return EXIT_USAGE
    except SupervisorEscalation as exc:
        logger.error("worker: %s", exc)
        return EXIT_FAILED

    stop = threading.Event()
    signals_seen = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    deadline = None if duration is None else time.monotonic() + duration
    failed = False
    try:
        while not stop.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            # Short waits keep the main thread responsive to signals.
            wait = 0.2 if remaining is None else min(0.2, remaining)
            try:
                if system.wait(wait):
                    break  # stopped from elsewhere
            except SupervisorEscalation as exc:
                logger.error("worker: %s", exc)
                failed = True
                break
        if not failed:
            # A second signal while draining cuts the drain short.
            drain = signals_seen < 2
            system.stop(timeout=drain_timeout if drain else 1.0, drain=drain)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failed or system.state == "failed":
        return EXIT_FAILED
    return EXIT_OK
