"""A program under a real pseudo-terminal of a known size, and what its screen shows.

:class:`Screen` is a small VT100 interpreter: it knows what rich's live display
writes (text, ``\\r``, ``\\n``, cursor up/down/left/right/position, erase in line
and display, SGR colours, private modes) and keeps the visible cells; anything
else is ignored. That is all the dashboard emits, so no terminal-emulator
dependency is needed to assert what a user would see.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_SEQUENCE = re.compile(
    r"\x1b\[([?0-9;]*)([A-Za-z@])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Z0-9]|\x1b[=>78]"
)


class Screen:
    """The cells of a ``columns`` x ``rows`` terminal after what was written to it."""

    def __init__(self, columns: int, rows: int) -> None:
        self.columns = columns
        self.rows = rows
        self.cells = [[" "] * columns for _ in range(rows)]
        self.row = 0
        self.column = 0
        self.wrote_escapes = False

    def feed(self, text: str) -> None:
        position = 0
        for match in _SEQUENCE.finditer(text):
            self._text(text[position : match.start()])
            self.wrote_escapes = True
            if match.group(2) is not None:
                self._csi(match.group(1), match.group(2))
            position = match.end()
        self._text(text[position:])

    def lines(self) -> list[str]:
        """The visible lines, trailing blanks removed."""
        return ["".join(row).rstrip() for row in self.cells]

    def text(self) -> str:
        return "\n".join(self.lines()).rstrip("\n")

    def _text(self, text: str) -> None:
        for char in text:
            if char == "\r":
                self.column = 0
            elif char == "\n":
                self._down()
            elif char == "\b":
                self.column = max(0, self.column - 1)
            elif char >= " ":
                if self.column >= self.columns:
                    self.column = 0
                    self._down()
                self.cells[self.row][self.column] = char
                self.column += 1

    def _down(self) -> None:
        if self.row == self.rows - 1:
            self.cells.pop(0)
            self.cells.append([" "] * self.columns)
        else:
            self.row += 1

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # private modes: cursor visibility, alternate screen
        numbers = [int(p) if p else 0 for p in params.split(";")] if params else []
        first = numbers[0] if numbers else 0
        count = max(1, first)
        if final == "A":
            self.row = max(0, self.row - count)
        elif final == "B":
            self.row = min(self.rows - 1, self.row + count)
        elif final == "C":
            self.column = min(self.columns - 1, self.column + count)
        elif final == "D":
            self.column = max(0, self.column - count)
        elif final == "G":
            self.column = min(self.columns - 1, count - 1)
        elif final in "Hf":
            row = numbers[0] if numbers else 1
            column = numbers[1] if len(numbers) > 1 else 1
            self.row = min(self.rows - 1, max(1, row) - 1)
            self.column = min(self.columns - 1, max(1, column) - 1)
        elif final == "K":
            line = self.cells[self.row]
            span = {
                0: range(self.column, self.columns),
                1: range(self.column + 1),
                2: range(self.columns),
            }
            for index in span.get(first, ()):
                line[index] = " "
        elif final == "J":
            rows = {0: range(self.row + 1, self.rows), 1: range(self.row), 2: range(self.rows)}
            for index in rows.get(first, ()):
                self.cells[index] = [" "] * self.columns
            if first == 0:
                self._csi("0", "K")


Step = tuple[Callable[[Screen], bool], str]


def run(
    argv: Sequence[str],
    columns: int,
    rows: int,
    *,
    steps: Sequence[Step] = (),
    timeout: float = 60.0,
    cwd: Path = ROOT,
    on_screen: Callable[[Screen], None] | None = None,
) -> tuple[int, Screen]:
    """Run ``argv`` under a ``columns`` x ``rows`` terminal until it exits.

    Args:
        argv: the command.
        steps: ``(condition, keys)``: once the screen meets ``condition``, ``keys``
            are typed; the steps are taken in order.
        timeout: seconds before the program is killed and the test fails.
        on_screen: called after each chunk of output, to check every frame.

    Returns:
        The exit code and the final screen.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, TERM="xterm-256color")
    for variable in ("NO_COLOR", "COLUMNS", "LINES", "FORCE_COLOR", "TERM_PROGRAM"):
        env.pop(variable, None)
    process = subprocess.Popen(
        list(argv), stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True,
        start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    screen = Screen(columns, rows)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = list(steps)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pending and pending[0][0](screen):
                os.write(master, pending.pop(0)[1].encode())
                continue
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the program closed the terminal
                    break
                if not chunk:
                    break
                screen.feed(decoder.decode(chunk))
                if on_screen is not None:
                    on_screen(screen)
            elif process.poll() is not None:
                break
        else:
            raise AssertionError(f"{argv} still running after {timeout}s:\n{screen.text()}")
        assert not pending, (
            f"never saw the screen for step {len(steps) - len(pending)}:\n{screen.text()}"
        )
        return process.wait(10), screen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        os.close(master)
