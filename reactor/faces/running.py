"""Running a topology from the shell: ``reactor run``, ``demo`` and ``worker``.

:func:`run_topology` starts a topology, shows it (the live dashboard, status
lines or JSON lines), serves its metrics if asked, and runs it with
:func:`~reactor.runtime.serve.serve` until a signal, ``--duration``, or the
system's end. It says on stderr what a stop is doing: that it drains, what the
drain still waits for, why a broker cannot be reached, and, when the exit code
is not 0, why. Every line of user text goes through :func:`reactor.text.printable`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from rich.console import Console, RenderableType
from rich.text import Text

from reactor.errors import ReactorError, SupervisorEscalation, UsageError
from reactor.faces import logs
from reactor.faces.dashboard import Dashboard
from reactor.faces.export import MetricsServer, serve_metrics
from reactor.faces.presenter import Presenter
from reactor.faces.settle import SettledWatch, StopRequests, check_settles
from reactor.runtime.serve import ExitCode, serve
from reactor.runtime.system import System
from reactor.runtime.topology import Topology
from reactor.text import printable

__all__ = ["CONNECT_TIMEOUT_S", "DRAIN_TIMEOUT_S", "run_topology", "say"]

# How long a graceful drain may take at the end of --duration or after Ctrl-C.
DRAIN_TIMEOUT_S = 30.0
# How long a channel may take to reach its broker after the start.
CONNECT_TIMEOUT_S = 10.0
STATUS_INTERVAL_S = 1.0
_DEBUG_HINT = "; --debug shows the traceback"


def run_topology(
    topology: Topology,
    *,
    out: Console,
    err: Console,
    dashboard: bool,
    json: bool = False,
    duration: float | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    panels: Sequence[tuple[str, Callable[[], RenderableType]]]
    | Callable[[System], Sequence[tuple[str, Callable[[], RenderableType]]]] = (),
    only: frozenset[str] | None = None,
    connect_timeout: float | None = CONNECT_TIMEOUT_S,
    drain_timeout: float = DRAIN_TIMEOUT_S,
    log: logs.TerminalLog | None = None,
    until_settled: bool = False,
) -> ExitCode:
    """Start ``topology``, show it, and serve it until ``duration`` or Ctrl-C / SIGTERM.

    ``only`` starts just the named consumers, pools, supervisors and producers
    (``reactor worker``). Stopping is :func:`~reactor.runtime.serve.serve`'s; this
    face adds the dashboard (with presenter keys when stdin is a terminal), JSON
    lines or metrics server, and says when it drains, what the drain waits for, and
    why a broker cannot be reached. ``until_settled`` drains and stops once every
    producer ran dry and everything is handled or dead-lettered.

    Returns:
        An :class:`ExitCode` (see :func:`~reactor.runtime.serve.serve`).

    Raises:
        TopologyError: the topology is invalid; nothing was started.
        ReactorError: a channel cannot be opened (a locked log, a missing folder,
            the redis extra missing); nothing was started.
        UsageError: anything else that stopped the start, or the metrics port
            cannot be served; the message says what, and the cause is chained.
    """
    if until_settled:
        check_settles(topology)
    try:
        system = topology.start(only=only)
    except SupervisorEscalation as exc:  # a child kept failing to start
        say(err, f"reactor: {topology.name}: {exc}", style="bold red")
        return ExitCode.FAILED
    except ReactorError:
        raise
    except Exception as exc:
        raise UsageError(
            f"reactor: cannot start topology {topology.name!r}: {type(exc).__name__}: {exc}"
            f"{_DEBUG_HINT}"
        ) from exc
    server: MetricsServer | None = None
    try:
        if metrics_port is not None:
            server = serve_metrics(system, metrics_port, metrics_host)
            err.print(f"serving Prometheus metrics on {server.url}", highlight=False)
    except (OSError, ValueError) as exc:
        system.stop(timeout=5.0, drain=False)
        raise UsageError(
            f"reactor: cannot serve metrics on {metrics_host}:{metrics_port}: {exc}; "
            "pick another --metrics-port (0 picks a free one)"
        ) from exc

    if callable(panels):  # panels of the running system (a demo's read model)
        panels = panels(system)
    live = dashboard and not json
    requests = StopRequests()
    presenter = Presenter(system, requests.request, system.clock.monotonic) if live else None
    view = Dashboard(system, console=out, panels=panels, presenter=presenter)
    settled = SettledWatch(system, requests.request).start() if until_settled else None
    announcer = _Announcer(err, live)
    view_done = threading.Event()
    viewer = threading.Thread(
        target=_show,
        args=(view, view_done),
        kwargs={"live": live, "json": json, "log": log},
        name="reactor-dashboard",
        daemon=True,
    )
    viewer.start()
    try:
        code = serve(
            system,
            duration=duration,
            drain_timeout=drain_timeout,
            on_stopping=announcer.stopping,
            connect_timeout=connect_timeout,
            on_unreachable=announcer.unreachable,
            on_waiting=announcer.waiting,
            signals=requests,
        )
    finally:
        if settled is not None:
            settled.close()
        view_done.set()
        viewer.join(5.0)
        if server is not None:
            server.close()
    announcer.flush()
    if code is ExitCode.FAILED:
        try:
            system.wait(0)
        except SupervisorEscalation as exc:
            say(err, f"reactor: {system.name}: {exc}", style="bold red")
    elif code is ExitCode.UNREACHABLE:
        say(
            err,
            f"reactor: {system.name}: gave up after --connect-timeout {connect_timeout:g}s: "
            + "; ".join(announcer.unreachable_reasons)
            + "; start the broker or fix the channel's URL, or raise --connect-timeout",
            style="bold red",
        )
    elif code is ExitCode.ABANDONED:
        say(
            err,
            f"reactor: {system.name}: the drain did not finish within --drain-timeout "
            f"{drain_timeout:g}s: {system.abandoned} event(s) left unhandled (a durable channel "
            "delivers them again at the next start, a memory channel lost them); "
            "fix the slow handler or raise --drain-timeout",
            style="bold red",
        )
    return code


def say(console: Console, line: str, *, style: str | None = None) -> None:
    """One line of text from anywhere (an exception message, a URL) on ``console``, made safe."""
    console.print(Text(printable(line), style=style or ""), soft_wrap=True, highlight=False)


class _Announcer:
    """Says on stderr that the system is draining, what the drain waits for, and why a
    broker is unreachable. While the live dashboard draws, it says so after it ends."""

    def __init__(self, err: Console, live: bool) -> None:
        self._err = err
        self._live = live
        self._later: list[str] = []
        self.unreachable_reasons: tuple[str, ...] = ()

    def stopping(self, at_once: bool) -> None:
        if self._live:  # the live dashboard shows it in its header instead
            return
        if at_once:
            self._err.print("stopping at once", style="yellow", highlight=False)
        else:
            self._err.print(
                "draining… (Ctrl-C again to stop at once)", style="yellow", highlight=False
            )

    def waiting(self, waits: tuple[str, ...]) -> None:
        line = "draining, waiting for: " + ("; ".join(waits) or "the actors to stop")
        if self._live:
            self._later = [line]  # only the latest matters
        else:
            say(self._err, line, style="yellow")

    def unreachable(self, reasons: tuple[str, ...]) -> None:
        self.unreachable_reasons = reasons

    def flush(self) -> None:
        for line in self._later:
            say(self._err, line, style="yellow")
        self._later.clear()


def _show(
    view: Dashboard,
    done: threading.Event,
    *,
    live: bool,
    json: bool,
    log: logs.TerminalLog | None,
) -> None:
    """The viewer thread: live frames or status lines."""
    try:
        if live:
            if log is None:
                view.run(stop_event=done)
            else:
                with log.held():  # log lines would tear the live frame
                    view.run(stop_event=done)
        else:
            view.run_lines(stop_event=done, json=json, interval_s=STATUS_INTERVAL_S)
    finally:
        done.set()
