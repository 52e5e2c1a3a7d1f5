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
from collections.abc import Iterable
from typing import TYPE_CHECKING

from reactor.errors import SupervisorEscalation, TopologyError
from reactor.runtime.serve import ExitCode, SignalSource, serve

if TYPE_CHECKING:
    from reactor.runtime.topology import Topology

__all__ = ["parse_only", "run_worker"]

logger = logging.getLogger("reactor")


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
    signals: SignalSource | None = None,
) -> ExitCode:
    """Run the ``only`` part of ``topology`` until SIGINT/SIGTERM or ``duration``.

    The first signal drains (in-flight events are finished and acked) and stops;
    a second one stops at once. It runs :func:`~reactor.runtime.serve.serve`,
    so signal handlers are installed only when called from the main thread.

    Args:
        topology: the whole topology (every process declares the same one, so
            every process knows every group).
        only: names of consumers, pools, supervisors and producers to run, as
            ``"a,b"`` or an iterable; None runs everything.
        duration: stop after this many seconds; None runs until a signal.
        drain_timeout: seconds the graceful stop may take.
        signals: where stop requests come from (default: SIGINT and SIGTERM).

    Returns:
        :attr:`~ExitCode.OK` after a stop, :attr:`~ExitCode.FAILED` if the root
        supervisor gave up, :attr:`~ExitCode.USAGE` if the topology or ``only``
        is invalid (errors are logged to the ``reactor`` logger).
    """
    names = parse_only(only) if only is not None else None
    try:
        system = topology.start(only=names)
    except TopologyError as exc:
        logger.error("worker: %s", exc)
        return ExitCode.USAGE
    except SupervisorEscalation as exc:
        logger.error("worker: %s", exc)
        return ExitCode.FAILED
    # A root that gives up while running is logged by the system itself.
    return serve(system, duration=duration, drain_timeout=drain_timeout, signals=signals)
