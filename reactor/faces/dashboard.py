"""A live console dashboard of a running :class:`~reactor.System`, drawn with rich.

The dashboard only reads what any user may read: :meth:`System.metrics`,
:meth:`System.health` and :meth:`System.recent_lifecycle`. It never reaches into
an actor, so drawing it cannot block or slow one: a frame costs one snapshot.

Shown, by priority when the terminal is short (see :mod:`reactor.faces.screen`):

* a header of two lines: system name and state, uptime, throughput, what was handled
  (and published, when the process runs producers), restarts, dead letters, each
  projection's lag behind its channel, health;
* problems and the latest lifecycle events: failures, restarts, escalations, dead
  letters, drops, newest first, each wrapped;
* per channel and group: backend, events published (a group: delivered), backlog,
  delayed events scheduled for later (a channel's),
  in flight, used capacity, dropped, dead letters (and how many its store keeps);
* per consumer (a pool counts as one) and producer: events/s now, a history bar of
  the last ``history_s`` seconds, handler latency p50/p99, events, failures, restarts;
* the supervision tree, each actor's state in colour (one summary line when short);
* with a :class:`~reactor.faces.presenter.Presenter`, the key line.

One concept, so one module despite its length: the live view of a system; what a
frame shows and how it is refreshed read the same snapshots and rate history. How
each value is drawn is :mod:`reactor.faces.cells`.

When stdout is not a terminal, :meth:`Dashboard.run_lines` writes one compact
status line (or one JSON snapshot) per interval instead.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.text import Text
from rich.tree import Tree

from reactor.errors import UsageError
from reactor.faces.cells import (
    STATE_STYLES,
    actor_label,
    backend_label,
    count,
    duration,
    event_line,
    latency,
    si,
    sparkline,
    tree_summary,
)
from reactor.faces.export import metrics_json
from reactor.faces.screen import Frame, Section
from reactor.faces.screen import table as screen_table
from reactor.messages import lifecycle
from reactor.runtime.metrics import ActorMetrics, Health, SystemMetrics
from reactor.text import printable

if TYPE_CHECKING:
    from reactor.faces.presenter import Presenter
    from reactor.messages.event import Event
    from reactor.runtime.system import System

__all__ = ["MAX_REFRESH_PER_SECOND", "Dashboard", "sparkline"]

MAX_REFRESH_PER_SECOND = 10.0
# What `reactor run` draws: rich needs 5-10 ms a frame, so 4 frames cost <= 5% of the GIL.
DEFAULT_REFRESH_PER_SECOND = 4.0

HEALTH_STYLES: Mapping[str, str] = {
    "ok": "bold green",
    "degraded": "bold yellow",
    "failed": "bold red",
    "stopped": "dim",
    "starting": "cyan",
}
_ROW_KINDS = ("consumer", "pool", "producer")
_HISTORY_CELLS = 20
_NARROW_HISTORY_CELLS = 14
# From this width on, tables get their roomy form (full backend URLs, longer history).
_WIDE = 100
_EVENT_LINES = 8
# Lifecycle topics worth a line in the events panel; "started" and "stopped" are
# routine and would push the interesting ones out.
_NOTABLE = (
    lifecycle.ACTOR_FAILED,
    lifecycle.ACTOR_RESTARTED,
    lifecycle.SUPERVISOR_ESCALATED,
    lifecycle.DEADLETTER,
    lifecycle.EVENT_DROPPED,
    lifecycle.SAGA_RESENT,
    lifecycle.SAGA_STUCK,
)


class _Rates:
    """Events/s of one consumer, from successive ``handled`` counters."""

    __slots__ = ("history", "recent", "second", "second_count")

    def __init__(self, history_s: int) -> None:
        self.recent: collections.deque[tuple[float, int]] = collections.deque()
        self.history: collections.deque[float] = collections.deque(maxlen=history_s)
        self.second: int | None = None
        self.second_count = 0.0

    def observe(self, now: float, handled: int) -> None:
        recent = self.recent
        if recent:
            last_time, last_handled = recent[-1]
            # A member that left a pool takes its count with it: never a negative rate.
            delta = max(0, handled - last_handled)
            self._account(now, last_time, delta)
        recent.append((now, handled))
        while len(recent) > 2 and recent[1][0] <= now - 1.0:
            recent.popleft()

    def _account(self, now: float, then: float, delta: int) -> None:
        # Spread a delta over the whole seconds it covers, so the history has one
        # value per second whatever the sampling interval.
        # A sample closes the interval (then, now]: a sample taken exactly on a
        # second boundary belongs to the second that just ended.
        second = math.ceil(now) - 1
        if self.second is None:
            self.second = int(then)
        while self.second < second:
            self.history.append(self.second_count)
            self.second_count = 0.0
            self.second += 1
        self.second_count += delta

    def now(self) -> float:
        recent = self.recent
        if len(recent) < 2:
            return 0.0
        (first_time, first), (last_time, last) = recent[0], recent[-1]
        span = last_time - first_time
        return max(0, last - first) / span if span > 0 else 0.0


class Dashboard:
    """A live view of one running system.

    Args:
        system: the system to show.
        console: where to draw; a new :class:`rich.console.Console` on stdout by default.
        refresh_per_second: frames per second, capped at 10 so that drawing never
            costs the system noticeable throughput.
        history_s: seconds of events/s history kept per consumer.
        clock: monotonic time for rates and durations; the system's clock by default
            (tests pass a fake one).
        panels: extra ``(title, render)`` panels drawn after the built-in ones,
            e.g. a demo's read model; ``render`` is called once per frame. A
            ``render`` with a ``summary()`` method gives the line shown instead of
            the panel when the terminal is short.
        presenter: keys that act on the system while :meth:`run` draws (see
            :mod:`reactor.faces.presenter`); None draws only.

    Thread-safety: :meth:`render`, :meth:`status_line` and the run methods update
    the rate history; call them from one thread at a time.
    """

    def __init__(
        self,
        system: System,
        console: Console | None = None,
        refresh_per_second: float = DEFAULT_REFRESH_PER_SECOND,
        history_s: int = 60,
        *,
        clock: Callable[[], float] | None = None,
        panels: Sequence[tuple[str, Callable[[], RenderableType]]] = (),
        presenter: Presenter | None = None,
    ) -> None:
        if refresh_per_second <= 0:
            raise UsageError(
                f"Dashboard: refresh_per_second must be > 0, got {refresh_per_second!r}; "
                f"pass a rate such as {DEFAULT_REFRESH_PER_SECOND}"
            )
        self.system = system
        self.console = console if console is not None else Console()
        self.refresh_per_second = min(float(refresh_per_second), MAX_REFRESH_PER_SECOND)
        self.history_s = max(1, int(history_s))
        self.panels = tuple(panels)
        self.presenter = presenter
        self._clock = clock if clock is not None else system.clock.monotonic
        self._rates: dict[str, _Rates] = {}

    # -- sampling --------------------------------------------------------------------

    def observe(self, metrics: SystemMetrics) -> None:
        """Record a snapshot's ``handled`` counters into the events/s history."""
        now = self._clock()
        counts = _handled_by_consumer(metrics)
        counts.update(
            (actor.name, actor.handled) for actor in metrics.actors if actor.kind == "producer"
        )
        for name, handled in counts.items():
            rates = self._rates.get(name)
            if rates is None:
                rates = self._rates[name] = _Rates(self.history_s)
            rates.observe(now, handled)

    def rate(self, consumer: str) -> float:
        """Events/s handled by ``consumer`` (a pool: all its members; a producer: sent)
        over the last second."""
        rates = self._rates.get(consumer)
        return rates.now() if rates is not None else 0.0

    def history(self, consumer: str) -> tuple[float, ...]:
        """Events handled by ``consumer`` in each of the last ``history_s`` whole seconds."""
        rates = self._rates.get(consumer)
        return tuple(rates.history) if rates is not None else ()

    # -- rendering -------------------------------------------------------------------

    def render(
        self, metrics: SystemMetrics | None = None, *, height: int | None = None
    ) -> RenderableType:
        """Build one frame from a fresh snapshot (or ``metrics``, if given).

        Args:
            metrics: the snapshot to show; a fresh one by default.
            height: the lines the frame may take; the least important sections give
                way when they do not fit (see :mod:`reactor.faces.screen`). None
                draws everything.

        Returns:
            A rich renderable; it adapts to the width it is drawn at.
        """
        if metrics is None:
            metrics = self.system.metrics()
        self.observe(metrics)
        health = self.system.health()
        recent = self.system.recent_lifecycle(200)
        sections = [
            Section("header", self._header(metrics, health), min_lines=2),
        ]
        presenter = self._keys()
        if presenter is not None:
            sections.append(Section("keys", presenter.render(metrics, self._clock())))
        sections += [
            Section(
                "events",
                self._events(health, recent),
                min_lines=3,
                max_lines=None if height is None else max(4, height // 4),
            ),
            Section("channels", self._channels(metrics), min_lines=4),
            Section("consumers", self._consumers(metrics), min_lines=4),
        ]
        for index, (title, render) in enumerate(self.panels):
            # A panel that can say itself in a line (a ``summary()`` method) still shows
            # on a short terminal.
            brief = getattr(render, "summary", None)
            sections.append(
                Section(
                    f"panel-{index}",
                    Panel(render(), title=printable(title), title_align="left", box=box.ROUNDED),
                    summary=brief()
                    if callable(brief)
                    else Text(f"{printable(title)} (no room)", style="dim"),
                )
            )
        sections.append(Section("tree", self._tree(metrics), summary=tree_summary(metrics)))
        order = ["header", "events", "channels", "consumers"]
        order += [f"panel-{index}" for index in range(len(self.panels))]
        order += ["tree", "keys"]
        return Frame(sections, order, height, wide=("tree", "consumers"))

    def _keys(self) -> Presenter | None:
        """The presenter, when its keys can be read (else no key line, no selection)."""
        presenter = self.presenter
        return presenter if presenter is not None and presenter.available else None

    def _header(self, metrics: SystemMetrics, health: Health) -> RenderableType:
        handled = _handled_by_consumer(metrics)
        throughput = sum(self.rate(name) for name in handled)
        dead = sum(channel.dead_lettered for channel in metrics.channels)
        restarts = sum(actor.restarts for actor in metrics.actors)
        published = sum(actor.handled for actor in metrics.actors if actor.kind == "producer")
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(printable(metrics.name, newlines=False), style="bold")
        line.append("  ")
        state = "draining…" if metrics.state == "stopping" else metrics.state
        line.append(state, style=STATE_STYLES.get(metrics.state, ""))
        line.append(f"  up {duration(metrics.uptime_s)}")
        if handled or not _has_producers(metrics):
            line.append(f"  {si(throughput)} ev/s", style="bold")
            line.append(f"  handled {si(sum(handled.values()))}")
        if _has_producers(metrics):
            # A producer-only worker shows what it sent, not "handled 0".
            line.append(f"  published {si(published)}")
        second = Text(no_wrap=True, overflow="ellipsis")
        second.append(f"restarts {restarts}", style="yellow" if restarts else "")
        second.append(f"  dead letters {dead}", style="red" if dead else "")
        for projection in metrics.projections:  # a read model's lag behind its channel
            name = printable(projection.name, newlines=False)
            second.append(
                f"  {name} lag {si(projection.lag)}", style="yellow" if projection.lag else ""
            )
        second.append("  health ")
        second.append(health.status, style=HEALTH_STYLES.get(health.status, ""))
        if health.problems:
            # One line whatever the health: the problems are listed below, in full.
            count = len(health.problems)
            second.append(
                f": {count} problem{'s' if count != 1 else ''}, first: "
                f"{printable(health.problems[0], newlines=False)}",
                style="yellow",
            )
        if not metrics.sagas:
            return Group(line, second)
        return Group(line, second, _sagas_line(metrics))

    def _tree(self, metrics: SystemMetrics) -> RenderableType:
        children: dict[str, list[ActorMetrics]] = collections.defaultdict(list)
        for actor in metrics.actors:
            children[actor.supervisor].append(actor)
        roots = children.get("", [])
        tree = Tree(Text("supervision", style="bold"), guide_style="dim")
        for root in roots:
            self._branch(tree, root, children)
        return tree

    def _branch(
        self, parent: Tree, actor: ActorMetrics, children: Mapping[str, list[ActorMetrics]]
    ) -> None:
        kids = children.get(actor.name, [])
        if actor.name == "$channels" and all(kid.state == "running" for kid in kids):
            # Channels have their own table; folding them keeps the tree on one screen.
            label = actor_label(actor)
            label.append(f"  {len(kids)} channels running", style="dim")
            parent.add(label)
            return
        node = parent.add(actor_label(actor))
        for kid in kids:
            self._branch(node, kid, children)

    def _consumers(self, metrics: SystemMetrics) -> RenderableType:
        table = screen_table(
            "consumers and producers", legend="events: handled, or sent by a producer"
        )
        wide = self.console.width >= _WIDE
        cells = _HISTORY_CELLS if wide else _NARROW_HISTORY_CELLS
        table.add_column("name", overflow="ellipsis", no_wrap=True, min_width=8, max_width=24)
        table.add_column("ev/s", justify="right", no_wrap=True)
        table.add_column(f"last {self.history_s}s", no_wrap=True, overflow="crop", min_width=6)
        table.add_column("p50", justify="right", no_wrap=True)
        table.add_column("p99", justify="right", no_wrap=True)
        table.add_column("events", justify="right", no_wrap=True)
        table.add_column("failed", justify="right", no_wrap=True)
        table.add_column("restarts", justify="right", no_wrap=True)
        # The mean batch size, shown only when a batch consumer has handled batches.
        batching = any(actor.batches for actor in metrics.actors)
        if batching:
            table.add_column("batch", justify="right", no_wrap=True)
        members: dict[str, list[ActorMetrics]] = collections.defaultdict(list)
        for actor in metrics.actors:
            if actor.kind == "member":
                members[actor.supervisor].append(actor)
        presenter = self._keys()
        selected = presenter.selected if presenter is not None else None
        for actor in metrics.actors:
            if actor.kind not in _ROW_KINDS:
                continue
            group = members.get(actor.name, []) if actor.kind == "pool" else [actor]
            name = Text()
            if presenter is not None:
                name.append("▸ " if actor.name == selected else "  ", style="bold cyan")
            name.append(
                printable(actor.name, newlines=False),
                style="bold" if actor.name == selected else "",
            )
            if actor.kind == "pool":
                name.append(f" ×{len(group)}", style="cyan")  # noqa: RUF001 - a multiplication sign
            elif actor.kind == "producer":
                if presenter is not None and presenter.is_paused(actor.name):
                    name.append(" paused", style="bold yellow")
                else:
                    name.append(" producer", style="dim")
            p50 = max((member.latency.p50 for member in group), default=0.0)
            p99 = max((member.latency.p99 for member in group), default=0.0)
            # A pool's own counters hold what its removed members did.
            retired = actor if actor.kind == "pool" else None
            failed = sum(member.event_failures for member in group) + (
                retired.event_failures if retired else 0
            )
            handled = sum(member.handled for member in group) + (retired.handled if retired else 0)
            restarts = sum(member.restarts for member in group) + (
                retired.restarts if retired else 0
            )
            producer = actor.kind == "producer"
            batches = sum(member.batches for member in group) + (retired.batches if retired else 0)
            row: list[RenderableType] = [
                name,
                f"{self.rate(actor.name):.1f}",
                Text(sparkline(self.history(actor.name), cells), style="cyan"),
                "" if producer else latency(p50),
                "" if producer else latency(p99),
                si(handled),
                Text(str(failed), style="red" if failed else "dim"),
                Text(str(restarts), style="yellow" if restarts else "dim"),
            ]
            if batching:
                row.append(f"{handled / batches:.0f}" if batches else "")
            table.add_row(*row)
        return table

    def _channels(self, metrics: SystemMetrics) -> RenderableType:
        table = screen_table(
            "channels", legend="events: published into a channel, delivered to each group"
        )
        wide = self.console.width >= _WIDE
        table.add_column(
            "channel / group", overflow="ellipsis", no_wrap=True, min_width=10, max_width=24
        )
        table.add_column("backend", overflow="ellipsis", no_wrap=True, max_width=40 if wide else 7)
        table.add_column("events", justify="right", no_wrap=True)
        table.add_column("backlog", justify="right", no_wrap=True)
        # Delayed events waiting in the channel's scheduled area for their due time.
        table.add_column("later", justify="right", no_wrap=True)
        table.add_column("in flight", justify="right", no_wrap=True)
        # Unsettled events of the capacity: red at capacity (a full channel holds producers back).
        table.add_column("used", justify="right", no_wrap=True)
        table.add_column("dropped", justify="right", no_wrap=True)
        table.add_column("dead", justify="right", no_wrap=True)
        # Dead letters the channel's store holds now (listed, redriven, purged by
        # System.dead_letters/redrive/purge and `reactor dead-letters`).
        table.add_column("kept", justify="right", no_wrap=True)
        for channel in metrics.channels:
            full = channel.unsettled >= channel.capacity
            used = Text(
                f"{si(channel.unsettled)}/{si(channel.capacity)}",
                style="bold red"
                if full
                else ("yellow" if channel.unsettled > channel.capacity // 2 else "dim"),
            )
            system = channel.name.startswith("$")
            table.add_row(
                Text(
                    printable(channel.name, newlines=False), style="bold dim" if system else "bold"
                ),
                Text(backend_label(channel.backend, wide), style="dim"),
                si(channel.published),
                count(channel.backlog, "yellow"),
                count(channel.scheduled, "cyan"),
                count(channel.in_flight, ""),
                used,
                count(channel.dropped, "red"),
                count(channel.dead_lettered, "red"),
                count(channel.stored_dead_letters, "red"),
            )
            for group in channel.groups:
                table.add_row(
                    Text(
                        f" └ {printable(group.name, newlines=False)}", style="dim" if system else ""
                    ),
                    "",
                    Text(si(group.delivered), style="dim"),
                    count(group.backlog, "yellow"),
                    "",
                    count(group.in_flight, ""),
                    "",
                    "",
                    count(group.dead_lettered, "red"),
                    "",
                )
        return table

    def _events(self, health: Health, recent: Sequence[Event]) -> RenderableType:
        rows: list[RenderableType] = [
            Text(f"! {printable(problem)}", style="yellow") for problem in health.problems
        ]
        notable = [event for event in recent if event.topic in _NOTABLE][-_EVENT_LINES:]
        # Newest first: when the screen is short, the oldest give way.
        rows += [event_line(event) for event in reversed(notable)]
        title = Text("problems and latest events", style="bold")
        if not rows:
            title.append("  none: no failures, restarts or dead letters yet", style="dim")
        return Group(title, *rows)

    # -- status lines ----------------------------------------------------------------

    def status_line(self, metrics: SystemMetrics, health: Health | None = None) -> str:
        """One compact line: state, uptime, throughput, restarts, backlog, dead letters, health.

        Also records ``metrics`` into the rate history, so successive calls give
        events/s.
        """
        self.observe(metrics)
        handled = _handled_by_consumer(metrics)
        throughput = sum(self.rate(name) for name in handled)
        restarts = sum(actor.restarts for actor in metrics.actors)
        backlog = sum(channel.backlog for channel in metrics.channels)
        dead = sum(channel.dead_lettered for channel in metrics.channels)
        dropped = sum(channel.dropped for channel in metrics.channels)
        parts = [
            f"{printable(metrics.name, newlines=False)} {metrics.state}",
            f"up {duration(metrics.uptime_s)}",
            f"{throughput:.1f} ev/s",
            f"handled {sum(handled.values())}",
            f"restarts {restarts}",
            f"backlog {backlog}",
            f"dropped {dropped}",
            f"dead letters {dead}",
        ]
        if health is not None:
            parts.append(f"health {health.status}")
        return " | ".join(parts)

    @staticmethod
    def json_line(metrics: SystemMetrics) -> str:
        """The snapshot as one line of JSON (:func:`reactor.faces.export.metrics_json`)."""
        return metrics_json(metrics)

    # -- running ---------------------------------------------------------------------

    def run(self, duration: float | None = None, stop_event: threading.Event | None = None) -> None:
        """Draw live frames until ``duration`` elapses, ``stop_event`` is set or the system ends.

        The last frame stays on the screen. Frames are drawn from this thread
        (rich's own refresh thread is not used), at most ``refresh_per_second``.
        """
        interval = 1.0 / self.refresh_per_second
        deadline = None if duration is None else self._clock() + duration
        stop = stop_event if stop_event is not None else threading.Event()
        presenter = self.presenter
        keys = presenter.keyboard() if presenter is not None else contextlib.nullcontext()
        with (
            keys,
            Live(
                self._frame(),
                console=self.console,
                auto_refresh=False,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as live,
        ):
            while not self._finished(stop, deadline, interval):
                live.update(self._frame(), refresh=True)
            live.update(self._frame(), refresh=True)

    def _frame(self) -> RenderableType:
        # One line short of the terminal: a frame as tall as the terminal scrolls it
        # by a line at each refresh on some terminals.
        return self.render(height=max(1, self.console.size.height - 1))

    def run_lines(
        self,
        duration: float | None = None,
        stop_event: threading.Event | None = None,
        *,
        json: bool = False,
        interval_s: float = 1.0,
    ) -> None:
        """Write one status line (or one JSON snapshot) per interval: the non-TTY mode.

        Ends, after a last line, when ``duration`` elapses, ``stop_event`` is set or
        the system ends.
        """
        deadline = None if duration is None else self._clock() + duration
        stop = stop_event if stop_event is not None else threading.Event()
        self.observe(self.system.metrics())
        while not self._finished(stop, deadline, interval_s):
            self._write_line(json)
        self._write_line(json)

    def _finished(self, stop: threading.Event, deadline: float | None, interval: float) -> bool:
        """Wait up to one interval; True once it is time to draw the last frame."""
        clock = self._clock
        wait = interval if deadline is None else max(0.0, min(interval, deadline - clock()))
        if self.presenter is not None and self.presenter.reading:
            self.presenter.wait(wait, stop)  # keys act at once, then the frame is redrawn
            if stop.is_set():
                return True
        elif stop.wait(wait):
            return True
        if deadline is not None and clock() >= deadline:
            return True
        return self.system.state in ("stopped", "failed")

    def _write_line(self, json: bool) -> None:
        metrics = self.system.metrics()
        line = self.json_line(metrics) if json else self.status_line(metrics, self.system.health())
        # out(): no markup, highlighting or wrapping, so a JSON line stays one line.
        self.console.out(line, highlight=False)


def _sagas_line(metrics: SystemMetrics) -> Text:
    """The header's line of saga instances by state (shown only when a saga is declared)."""
    line = Text("sagas", no_wrap=True, overflow="ellipsis")
    for saga in metrics.sagas:
        line.append(f"  {printable(saga.name, newlines=False)}: ", style="bold")
        line.append(f"{si(saga.running)} running")
        line.append(
            f" {si(saga.compensating)} compensating", style="yellow" if saga.compensating else ""
        )
        line.append(f" {si(saga.completed)} completed", style="green" if saga.completed else "")
        line.append(f" {si(saga.compensated)} compensated")
        line.append(f" {si(saga.stuck)} stuck", style="bold red" if saga.stuck else "")
    return line


def _handled_by_consumer(metrics: SystemMetrics) -> dict[str, int]:
    """``handled`` per consumer, pool members summed into their pool."""
    handled: dict[str, int] = {}
    pools = {actor.name for actor in metrics.actors if actor.kind == "pool"}
    for actor in metrics.actors:
        # A pool's own counters hold what its removed members handled.
        if actor.kind in ("consumer", "pool"):
            handled[actor.name] = handled.get(actor.name, 0) + actor.handled
        elif actor.kind == "member" and actor.supervisor in pools:
            handled[actor.supervisor] = handled.get(actor.supervisor, 0) + actor.handled
    return handled


def _has_producers(metrics: SystemMetrics) -> bool:
    return any(actor.kind == "producer" for actor in metrics.actors)
