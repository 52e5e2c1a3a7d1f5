"""Keys that act on a running system while the dashboard draws it: live demos.

=========  ==============================================================
key        what it does
=========  ==============================================================
tab, ↓, j  select the next consumer or producer (↑, k: the previous one)
c          crash the selected consumer, pool member or producer; its
           supervisor restarts it
p          pause the selected producer, or resume it
+ / -      double / halve the selected producer's rate
f          flood: the selected producer (or the first producer of the
           selected consumer's channel) publishes its channel's capacity
           and half again at once, past its rate
q          drain and quit (as Ctrl-C: what is in flight is handled first)
=========  ==============================================================

Keys are read from the terminal in cbreak mode (no echo, no line buffering; Ctrl-C
still interrupts), restored when the dashboard ends. Each action says what it did
on the key line for a few seconds. Acting goes through
:attr:`System.controls <reactor.System.controls>` only.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from rich.text import Text

from reactor.errors import ReactorError
from reactor.text import printable

if TYPE_CHECKING:
    from reactor.runtime.metrics import SystemMetrics
    from reactor.runtime.system import System

__all__ = ["KEYS", "Presenter"]

#: The key line's help, in the order it is shown.
KEYS = "tab select  c crash  p pause  +/- rate  f flood  q quit"
# How long an action's message replaces the key help.
_SAID_FOR_S = 4.0
_SELECTABLE = ("consumer", "pool", "producer")
# Escape sequences of the arrow keys (normal and application cursor mode).
_UP = ("\x1b[A", "\x1bOA")
_DOWN = ("\x1b[B", "\x1bOB")


class Presenter:
    """What the keys do to one system.

    Args:
        system: the running system.
        quit: called once on ``q``: drains and stops the system, as Ctrl-C would.
        clock: monotonic time, for how long a message stays.
        fd: the terminal to read keys from (default: stdin, when it is a terminal).

    Thread-safety: :meth:`press` and :meth:`render` run in the dashboard's thread.
    """

    def __init__(
        self,
        system: System,
        quit: Callable[[], None],
        clock: Callable[[], float],
        fd: int | None = None,
    ) -> None:
        self.system = system
        self._quit = quit
        self._clock = clock
        self._fd = fd if fd is not None else _stdin_terminal()
        self.selected: str | None = None
        self.message = ""
        self._said_at = -_SAID_FOR_S
        self._names: list[tuple[str, str]] = []  # (name, kind) in the table's order
        self._pending = ""
        self.reading = False

    # -- the terminal ----------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether keys can be read at all (stdin is a terminal): else no key line is drawn."""
        return self._fd is not None

    @contextlib.contextmanager
    def keyboard(self) -> Iterator[None]:
        """Read keys (cbreak mode) for the duration; the terminal is restored after."""
        fd = self._fd
        if fd is None:
            yield
            return
        try:
            saved = termios.tcgetattr(fd)
        except termios.error:
            yield
            return
        try:
            tty.setcbreak(fd)
            self.reading = True
            yield
        finally:
            self.reading = False
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Wait up to ``timeout`` for a key and act on what arrives (or until ``stop``)."""
        fd = self._fd
        if fd is None or stop.is_set():
            stop.wait(timeout)
            return
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(fd, 64).decode("utf-8", "replace")
        except OSError:
            self._fd = None  # the terminal went away: draw without keys
            return
        for key in self._keys(data):
            self.press(key)

    def _keys(self, data: str) -> list[str]:
        """Split what was read into keys; an escape sequence is one key."""
        text = self._pending + data
        self._pending = ""
        keys = []
        while text:
            if text[0] == "\x1b":
                if len(text) < 3:
                    self._pending = text  # the rest of the sequence is still coming
                    break
                keys.append(text[:3])
                text = text[3:]
            else:
                keys.append(text[0])
                text = text[1:]
        return keys

    # -- acting ----------------------------------------------------------------------

    def press(self, key: str) -> None:
        """Act on one key (tests call this directly)."""
        if key in ("\t", "j", *_DOWN):
            self._move(1)
        elif key in ("k", "\x1b[Z", *_UP):
            self._move(-1)
        elif key == "q":
            self._say("draining, then quitting…")
            self._quit()
        elif key in ("c", "p", "+", "=", "-", "f"):
            try:
                self._act(key)
            except ReactorError as exc:
                self._say(str(exc))

    def _act(self, key: str) -> None:
        name = self.selected
        kind = dict(self._names).get(name or "")
        if name is None or kind is None:
            self._say("select a consumer or producer first (tab)")
        elif key == "c":
            crashed = self.system.controls.crash(name, "crashed by a key press")
            self._say(f"crashed {crashed}; its supervisor restarts it")
        elif key == "f":
            self._flood(name if kind == "producer" else self._producer_for(name), name)
        elif kind != "producer":
            self._say(f"{key} acts on a producer; select one with tab")
        elif key == "p":
            self._pause(name)
        else:
            self._rate(name, faster=key in ("+", "="))

    def _flood(self, producer: str | None, selected: str) -> None:
        if producer is None:
            self._say(f"no producer publishes into {selected}'s channel")
            return
        controls = self.system.controls
        channel = controls.channel_of(producer)
        capacity = self.system.metrics().channel(channel).capacity
        count = capacity + capacity // 2
        controls.flood(producer, count)
        self._say(f"flooding {channel}: {producer} sends {count} events at once")

    def _pause(self, producer: str) -> None:
        controls = self.system.controls
        if controls.paused(producer):
            controls.resume(producer)
            self._say(f"resumed {producer}")
        else:
            controls.pause(producer)
            self._say(f"paused {producer}")

    def _rate(self, producer: str, *, faster: bool) -> None:
        rate = self.system.controls.rate(producer)
        if rate is None:
            if faster:
                self._say(f"{producer} is not rate-limited; - sets a rate")
                return
            # Unlimited: lowering starts from what it sends now.
            rate = max(self._sent_per_s(producer), 1.0)
        new = self.system.controls.set_rate(producer, rate * 2 if faster else rate / 2)
        self._say(f"{producer}: {new:g} events/s")

    def _producer_for(self, consumer: str) -> str | None:
        channel = None
        for decl in self.system.topology.consumers():
            if decl.name == consumer:
                channel = decl.channel
        for producer in self.system.controls.producers():
            if self.system.controls.channel_of(producer) == channel:
                return producer
        return None

    def _sent_per_s(self, producer: str) -> float:
        metrics = self.system.metrics()
        uptime = max(metrics.uptime_s, 1e-3)
        return metrics.actor(producer).handled / uptime

    def _move(self, step: int) -> None:
        names = [name for name, _ in self._names]
        if not names:
            return
        index = names.index(self.selected) if self.selected in names else -1 if step > 0 else 0
        self.selected = names[(index + step) % len(names)]

    def _say(self, message: str) -> None:
        self.message = printable(message, newlines=False)
        self._said_at = self._clock()

    def is_paused(self, producer: str) -> bool:
        try:
            return self.system.controls.paused(producer)
        except ReactorError:
            return False

    # -- drawing ---------------------------------------------------------------------

    def render(self, metrics: SystemMetrics, now: float) -> Text:
        """The key line: the last action's message for a few seconds, else the keys."""
        self._names = [
            (actor.name, actor.kind) for actor in metrics.actors if actor.kind in _SELECTABLE
        ]
        if self.selected is None and self._names:
            self.selected = self._names[0][0]
        line = Text(no_wrap=True, overflow="ellipsis")
        if self.message and now - self._said_at < _SAID_FOR_S:
            line.append("» ", style="bold cyan")
            line.append(self.message, style="bold")
            return line
        line.append("keys ", style="bold cyan")
        line.append(KEYS, style="cyan")
        return line


def _stdin_terminal() -> int | None:
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):
        return None
    return fd if os.isatty(fd) else None
