"""The command line's log: the ``reactor`` logger's records, one line each, on stderr.

Library code only logs (to the ``reactor`` logger, which has a ``NullHandler``);
the command line is where a user sees it. Without this a consumer that crashes
and restarts, or a channel that loses Redis, would be silent unless a handler
subscribed to ``$system``. ``--log-level`` picks the least severe level shown
(``warning`` by default); ``--debug`` shows tracebacks, which are otherwise
summed up as ``Type: message`` on the same line.

While the live dashboard owns the terminal, lines written to stderr would tear
its frame, and the dashboard shows crashes, restarts and problems itself: the
latest :data:`HELD_RECORDS` records are held and written when it ends, with
how many earlier ones were not kept (run without the dashboard to see them all).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.text import Text

from reactor.text import printable

__all__ = ["HELD_RECORDS", "LEVELS", "TerminalLog", "install", "uninstall"]

LEVELS = ("debug", "info", "warning", "error")
HELD_RECORDS = 20
_STYLES = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}


class TerminalLog(logging.Handler):
    """Writes each record as one printable line on a rich console (stderr)."""

    def __init__(self, console: Console, *, tracebacks: bool = False) -> None:
        super().__init__()
        self._console = console
        self._tracebacks = tracebacks
        self._held: collections.deque[logging.LogRecord] | None = None
        self._hold_lock = threading.Lock()
        self.dropped = 0
        self.previous_level = logging.NOTSET  # the logger's level before install()

    def emit(self, record: logging.LogRecord) -> None:
        with self._hold_lock:
            if self._held is not None:
                if len(self._held) == self._held.maxlen:
                    self.dropped += 1
                self._held.append(record)
                return
        self._write(record)

    def _write(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in a record is no reason to fail
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            if self._tracebacks:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            else:
                message += f": {type(error).__name__}: {error} (--debug shows the traceback)"
        level = record.levelname.lower()
        text = Text(f"reactor: {level}: ", style=_STYLES.get(record.levelname, "dim"))
        # Messages quote user text (exception messages, event data): never obey it.
        text.append(printable(message, newlines=self._tracebacks))
        self._console.print(text, soft_wrap=True, highlight=False)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold records while the block runs (a live dashboard is drawing); then write them."""
        with self._hold_lock:
            self._held = collections.deque(maxlen=HELD_RECORDS)
        try:
            yield
        finally:
            with self._hold_lock:
                held, self._held = self._held, None
            if self.dropped:
                self._console.print(
                    f"reactor: {self.dropped} earlier log line(s) not kept while the dashboard "
                    "ran (--no-dashboard shows every line)",
                    highlight=False,
                )
                self.dropped = 0
            for record in held or ():
                self._write(record)


def install(console: Console, level: str, *, tracebacks: bool = False) -> TerminalLog:
    """Send the ``reactor`` logger's records at ``level`` and above to ``console``.

    Returns:
        The handler; remove it with :func:`uninstall` when the command ends.
    """
    logger = logging.getLogger("reactor")
    handler = TerminalLog(console, tracebacks=tracebacks)
    handler.setLevel(level.upper())
    handler.previous_level = logger.level
    logger.addHandler(handler)
    # The logger must let the records through; the handler picks what is shown.
    if logger.level == logging.NOTSET or logger.level > handler.level:
        logger.setLevel(handler.level)
    return handler


def uninstall(handler: TerminalLog) -> None:
    """Take ``handler`` off the ``reactor`` logger and give it its level back."""
    logger = logging.getLogger("reactor")
    logger.removeHandler(handler)
    logger.setLevel(handler.previous_level)
