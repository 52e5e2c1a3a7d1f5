"""The SIGKILL harness the crash tests share: both sides of it.

A crash test runs a child script once per round, each with ``WHERE OUT ROUND FIRST
COUNT [MORE...]`` on its command line. The child writes what it did to ``OUT``, one
line per ``write`` (so lines from threads never interleave): ``S round`` once its
system has started, ``P ...`` after each publish returned, its own side effects, and
``DONE round`` after a clean stop. The parent kills every round but the last with
SIGKILL once the child got far enough (a predicate over the lines written so far),
then starts the next; the last round runs to completion. The parent then checks
``OUT`` and what the backend stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reactor import Event
from reactor.testing import wait_for

__all__ = ["Effects", "child_args", "kill_rounds", "lines", "published_since"]

# Small, odd publish batches: kills land between and inside commits.
PUBLISH_BATCH = 7


def lines(path: Path) -> list[str]:
    """The lines the children wrote to ``path`` so far."""
    return path.read_text().splitlines() if path.exists() else []


def published_since(written: list[str], round_: int, prefix: str = "P ") -> int:
    """How many lines starting with ``prefix`` the child of ``round_`` wrote; -1 before it started."""
    if f"S {round_}" not in written:
        return -1
    started = written.index(f"S {round_}")
    return sum(1 for line in written[started:] if line.startswith(prefix))


def kill_rounds(
    child: Path,
    where: str | Path,
    out: Path,
    *,
    kills: int,
    per_round: int,
    ready: Callable[[int, list[str]], bool],
    more: Sequence[str] = (),
    must_kill: bool = False,
    finish_s: float = 120,
) -> list[int]:
    """Run ``kills + 1`` rounds of ``child``, killing each but the last once ``ready``.

    Round ``r``'s child gets ``WHERE OUT r FIRST COUNT MORE...``: the ``per_round``
    numbers from ``r * per_round`` on are its own.

    Args:
        child: the child script.
        where: the log the children share (a sqlite file, a redis URL).
        out: the file the children write their lines to.
        kills: how many rounds are killed.
        per_round: the numbers each round publishes.
        ready: whether the child of a round got far enough to be killed, given the
            lines written so far.
        more: further arguments for every child.
        must_kill: fail if a child finished before it could be killed.
        finish_s: how long the last round may take.

    Returns:
        The rounds whose child was killed (one may finish before its kill).
    """
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    killed: list[int] = []
    for round_ in range(kills + 1):
        first = round_ * per_round
        args = [str(where), str(out), str(round_), str(first), str(per_round), *more]
        proc = subprocess.Popen(
            [sys.executable, str(child), *args],
            env=env,
            stderr=subprocess.PIPE,
        )
        if round_ == kills:
            _, stderr = proc.communicate(timeout=finish_s)
            assert proc.returncode == 0, stderr.decode()[-3000:]
            break
        wait_for(
            lambda proc=proc, round_=round_: proc.poll() is not None or ready(round_, lines(out)),
            60,
            message=f"round {round_}: the child never got far enough to be killed",
        )
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed.append(round_)
        else:
            assert not must_kill, "the child finished before it could be killed"
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
    assert lines(out)[-1] == f"DONE {kills}"
    return killed


# -- the child's side --------------------------------------------------------------------


def child_args() -> tuple[str, str, str, int, int, list[str]]:
    """``WHERE OUT ROUND FIRST COUNT`` from the command line, and what follows them."""
    where, out, round_, first, count, *more = sys.argv[1:]
    return where, out, round_, int(first), int(count), more


class Effects:
    """The child's side-effect file: one ``write`` per line, appended."""

    def __init__(self, out: str) -> None:
        self._fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: str) -> None:
        os.write(self._fd, (line + "\n").encode())

    def publish_numbered(
        self, system: Any, channel: str, first: int, count: int, make: Callable[[int], Event]
    ) -> None:
        """Publish ``make(n)`` for ``n`` in ``first .. first+count-1``; ``P n`` once each is in."""
        for start in range(first, first + count, PUBLISH_BATCH):
            numbers = range(start, min(start + PUBLISH_BATCH, first + count))
            system.publish_many(channel, [make(n) for n in numbers])
            for n in numbers:
                self.write(f"P {n}")

    def finish(self, system: Any, round_: str) -> None:
        """Wait until ``system`` is idle, stop it cleanly, write ``DONE round``."""
        system.wait_idle(60)
        system.stop(timeout=30)
        self.write(f"DONE {round_}")
        os.close(self._fd)
