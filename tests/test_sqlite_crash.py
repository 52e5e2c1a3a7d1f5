"""Crash safety of the sqlite backend: SIGKILL a publishing, consuming process, restart it.

Every round a child process (``sqlite_crash_child.py``) publishes a fresh range of
events into a sqlite channel consumed by two idempotent members of one group that
record each handling as a line in a side-effect file. The test kills it with
SIGKILL once it has published a seeded-random number of events (sometimes before
it has published any, so recovery itself gets killed too), then starts it again.
A last round runs to completion. Then:

* every event whose ``publish_many()`` returned (a ``P n`` line) was handled;
* no event was handled twice, except the one a member was handling when the kill
  came: its side effect was written but the dedup id was not yet committed. That
  is the only window an at-least-once log with idempotent consumers leaves open,
  so a repeat is allowed only for an event that was the *last* line its member
  wrote before a kill.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections import defaultdict
from pathlib import Path

import crashes
import pytest
from crashes import kill_rounds, published_since

CHILD = Path(__file__).resolve().parent / "sqlite_crash_child.py"
PER_ROUND = 300


def _run_rounds(tmp_path: Path, seed: int, kills: int) -> None:
    rng = random.Random(seed)
    db, out = tmp_path / "crash.db", tmp_path / "effects.log"
    targets = [rng.choice([0, rng.randrange(1, PER_ROUND)]) for _ in range(kills)]
    killed_rounds = kill_rounds(
        CHILD,
        db,
        out,
        kills=kills,
        per_round=PER_ROUND,
        ready=lambda r, lines: published_since(lines, r) >= targets[r],
    )
    _check(crashes.lines(out), killed_rounds)


def _check(lines: list[str], killed_rounds: list[int]) -> None:
    published = {int(line.split()[1]) for line in lines if line.startswith("P ")}
    handled: dict[int, list[tuple[int, str]]] = defaultdict(list)
    last_before_kill: set[tuple[int, str, int]] = set()  # (round, member, n)
    last_of: dict[tuple[int, str], int] = {}
    for line in lines:
        if line.startswith("H "):
            _, round_, member, n = line.split()
            handled[int(n)].append((int(round_), member))
            last_of[(int(round_), member)] = int(n)
    for (round_, member), n in last_of.items():
        if round_ in killed_rounds:
            last_before_kill.add((round_, member, n))
    lost = sorted(published - set(handled))
    assert not lost, f"{len(lost)} published event(s) never handled, e.g. {lost[:10]}"
    for n, handlings in handled.items():
        for round_, member in handlings[:-1]:
            assert (round_, member, n) in last_before_kill, (
                f"event {n} handled {len(handlings)} times ({handlings}); only an event interrupted "
                "by a kill may be handled again"
            )


def _dead_letters(db: Path) -> list[tuple[int, int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT seq, attempts, error_type FROM reactor_deadletters").fetchall()


def _working(lines: list[str], round_: int, per_round: int) -> bool:
    """Whether the child of ``round_`` published all its events and handled 40 of them."""
    published = {f"P {n}" for n in range(round_ * per_round, (round_ + 1) * per_round)}
    prefix = f"H {round_} "
    return sum(1 for line in lines if line.startswith(prefix)) >= 40 and published.issubset(lines)


def _run_kills(tmp_path: Path, kills: int, mode: str, per_round: int = 200) -> list[str]:
    """Kill the child ``kills`` times, each once it has handled some events of its round.

    Each round publishes ``per_round`` events at once, so that every kill finds the
    members with full prefetch windows (the default settings) and a backlog.
    """
    db, out = tmp_path / "crash.db", tmp_path / "effects.log"
    # Killed while it works: its round published, its first events handled, the rest
    # in flight or waiting.
    kill_rounds(
        CHILD,
        db,
        out,
        kills=kills,
        per_round=per_round,
        ready=lambda r, lines: _working(lines, r, per_round),
        more=[mode],
        must_kill=True,
    )
    lines = crashes.lines(out)
    assert _dead_letters(db) == [], "no event was at fault: nothing may be dead-lettered"
    published = {int(line.split()[1]) for line in lines if line.startswith("P ")}
    assert published == set(range((kills + 1) * per_round))
    return lines


@pytest.mark.parametrize("mode", ["defaults", "plain"])
def test_a_consumer_killed_five_times_handles_everything_and_dead_letters_nothing(
    tmp_path: Path, mode: str
) -> None:
    # Default settings (max_deliveries=5, prefetch=256): a crash used to charge an
    # attempt to every event delivered and not yet acked, so five kills dead-lettered
    # healthy events as DeliveryAbandoned (idempotent ones whose handler had finished
    # too). Now a crash charges one attempt, to the lowest event in flight.
    lines = _run_kills(tmp_path, kills=5, mode=mode)
    if mode == "defaults":  # idempotent: only what a kill interrupted may be handled again
        _check(lines, killed_rounds=list(range(5)))
    else:  # at least once
        handled = {int(line.split()[3]) for line in lines if line.startswith("H ")}
        assert handled == set(range(6 * 200))


@pytest.mark.soak
@pytest.mark.parametrize("mode", ["defaults", "plain"])
def test_a_consumer_killed_often_soak(tmp_path: Path, mode: str) -> None:
    if not os.environ.get("REACTOR_SOAK"):
        pytest.skip("set REACTOR_SOAK=1 for the long crash soak")
    _run_kills(tmp_path, kills=25, mode=mode)


def test_sigkill_at_random_points_loses_nothing_and_repeats_nothing_acked(tmp_path: Path) -> None:
    _run_rounds(tmp_path, seed=5, kills=4)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(3))
def test_sigkill_soak(tmp_path: Path, seed: int) -> None:
    if not os.environ.get("REACTOR_SOAK"):
        pytest.skip("set REACTOR_SOAK=1 for the long crash soak")
    _run_rounds(tmp_path, seed=100 + seed, kills=25)
