"""How one thing is drawn on the dashboard: a count, a latency, an actor, a lifecycle event.

Everything a user wrote (actor names, topics, error messages, event data) is passed
through :func:`reactor.text.printable` here, so an escape sequence in it is shown,
not obeyed; a backend URL goes through :func:`reactor.text.redact_url`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.containers import Lines
from rich.text import Text

from reactor.channels.registry import scheme_of
from reactor.faces.screen import consumer_failing
from reactor.messages import lifecycle
from reactor.messages.event import Event
from reactor.runtime.metrics import ActorMetrics, SystemMetrics
from reactor.text import printable, redact_url

__all__ = [
    "STATE_STYLES",
    "actor_label",
    "backend_label",
    "count",
    "duration",
    "event_line",
    "latency",
    "si",
    "sparkline",
    "tree_summary",
]

STATE_STYLES: Mapping[str, str] = {
    "running": "green",
    "starting": "cyan",
    "restarting": "bold yellow",
    "stopping": "yellow",
    "stopped": "dim",
    "failed": "bold red",
}
_SUPERVISOR_KINDS = ("supervisor", "pool")
_BARS = " ▁▂▃▄▅▆▇█"
# At most this many lines per lifecycle message: enough for the error it names.
_MESSAGE_LINES = 3


def sparkline(values: Sequence[float], width: int) -> str:
    """``values`` as a bar of ``width`` block characters, scaled to their maximum.

    The values are bucketed (each cell shows the mean of its bucket) and
    right-aligned: the newest value is the rightmost cell, missing history is blank.
    """
    if width <= 0:
        return ""
    if not values:
        return " " * width
    if len(values) > width:
        # Whole buckets, newest at the right; the oldest bucket may be partial.
        size = math.ceil(len(values) / width)
        start = len(values) % size
        buckets = [values[:start]] if start else []
        buckets += [values[i : i + size] for i in range(start, len(values), size)]
        cells = [sum(bucket) / len(bucket) for bucket in buckets]
    else:
        cells = list(values)
    top = max(cells)
    if top <= 0:
        bars = "".join(_BARS[0] if value == 0 else _BARS[1] for value in cells)
    else:
        steps = len(_BARS) - 1
        # Any activity gets at least the lowest bar, so a trickle is not drawn as nothing.
        bars = "".join(
            _BARS[0] if value <= 0 else _BARS[max(1, round(value / top * steps))] for value in cells
        )
    return bars.rjust(width)


def backend_label(url: str, wide: bool) -> str:
    """The backend as a column shows it: the scheme, or the whole URL (no password) when wide."""
    return printable(redact_url(url), newlines=False) if wide else scheme_of(url)


def tree_summary(metrics: SystemMetrics) -> Text:
    """The supervision tree in one line: how many actors, and those not running."""
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append("supervision", style="bold")
    actors = [actor for actor in metrics.actors if actor.kind not in _SUPERVISOR_KINDS]
    line.append(f"  {len(actors)} actors", style="dim")
    unwell = [actor for actor in metrics.actors if actor.state != "running"]
    if not unwell:
        line.append(", all running", style="green")
    for actor in unwell[:4]:
        line.append(f"  {printable(actor.name, newlines=False)} ", style="bold")
        line.append(actor.state, style=STATE_STYLES.get(actor.state, ""))
    if len(unwell) > 4:
        line.append(f"  +{len(unwell) - 4} more not running", style="dim")
    restarts = sum(actor.restarts for actor in metrics.actors)
    if restarts:
        line.append(f"  ↻ {restarts} restarts", style="yellow")
    line.append("  (tree: taller terminal)", style="dim")
    return line


def actor_label(actor: ActorMetrics) -> Text:
    label = Text()
    label.append(
        printable(actor.name, newlines=False),
        style="bold" if actor.kind in _SUPERVISOR_KINDS else "",
    )
    label.append(f" {actor.kind}", style="dim")
    label.append(" ● ", style=STATE_STYLES.get(actor.state, ""))
    label.append(actor.state, style=STATE_STYLES.get(actor.state, ""))
    if actor.restarts:
        label.append(f"  ↻ {actor.restarts} restarts", style="yellow")
    if actor.mailbox:
        label.append(f"  mailbox {actor.mailbox}", style="cyan")
    if actor.in_flight:
        label.append(f"  in flight {actor.in_flight}", style="cyan")
    if actor.kind == "producer":
        label.append(f"  published {si(actor.handled)}", style="dim")
    return label


class _AtMost:
    """A renderable cut to its first ``lines`` lines, the last ending in an ellipsis."""

    def __init__(self, text: Text, lines: int) -> None:
        self.text = text
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = self.text.wrap(console, options.max_width)
        if len(lines) > self.lines:
            lines = Lines(list(lines)[: self.lines])
            last = lines[-1]
            last.truncate(max(1, options.max_width - 1))
            last.append("…")
        yield from lines


def _field(data: Mapping[str, Any], key: str, default: str = "?") -> str:
    """A field of a lifecycle event, made safe to draw on one line."""
    return printable(str(data.get(key, default)), newlines=False)


def event_line(event: Event) -> RenderableType:
    data: Any = event.data if isinstance(event.data, Mapping) else {}
    stamp = event.time.astimezone().strftime("%H:%M:%S") if isinstance(event.time, datetime) else ""
    line = Text()
    line.append(f"{stamp} ", style="dim")
    actor = _field(data, "actor")
    error = f"{_field(data, 'error_type', '')}: {consumer_failing(_field(data, 'message', ''))}"
    if event.topic == lifecycle.ACTOR_FAILED:
        line.append("✖ failed ", style="red")
        line.append(actor, style="bold")
        line.append(f"  {error}")
    elif event.topic == lifecycle.ACTOR_RESTARTED:
        line.append("↻ restarted ", style="yellow")
        line.append(actor, style="bold")
        backoff = data.get("backoff_s")
        line.append(f"  attempt {_field(data, 'attempt')}")
        if isinstance(backoff, int | float) and backoff > 0:
            line.append(f", after {backoff * 1000:.0f} ms")
    elif event.topic == lifecycle.SUPERVISOR_ESCALATED:
        line.append("⚠ escalated ", style="bold red")
        line.append(actor, style="bold")
        line.append(f"  {error}")
    elif event.topic == lifecycle.DEADLETTER:
        original = data.get("event")
        line.append("☠ dead letter ", style="bold red")
        line.append(printable(str(getattr(original, "topic", "?")), newlines=False), style="bold")
        line.append(
            f"  from {_field(data, 'consumer')} after {_field(data, 'attempts')} attempts: {error}"
        )
    elif event.topic == lifecycle.EVENT_DROPPED:
        original = data.get("event")
        line.append("↓ dropped ", style="magenta")
        line.append(printable(str(getattr(original, "topic", "?")), newlines=False), style="bold")
        line.append(f"  on {_field(data, 'channel')} ({_field(data, 'policy')})")
    elif event.topic in (lifecycle.SAGA_RESENT, lifecycle.SAGA_STUCK):
        stuck = event.topic == lifecycle.SAGA_STUCK
        line.append(
            "⚠ saga stuck " if stuck else "↻ saga resent ", style="bold red" if stuck else "yellow"
        )
        line.append(f"{_field(data, 'saga')} step {_field(data, 'step')}", style="bold")
        line.append(f"  instance {_field(data, 'instance')}")
    else:
        line.append(f"{printable(event.topic, newlines=False)} {actor}")
    return _AtMost(line, _MESSAGE_LINES)


def count(value: int, style: str) -> Text:
    return Text(si(value), style=style if value else "dim")


def si(value: float) -> str:
    """A count in at most 5 characters: 999, 12.3k, 4.5M."""
    if abs(value) < 1000:
        return f"{value:.0f}" if isinstance(value, int) or value == int(value) else f"{value:.1f}"
    for unit, scale in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if abs(value) < scale * 1000:
            return f"{value / scale:.1f}{unit}"
    return f"{value / 1e12:.1f}T"


def latency(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
