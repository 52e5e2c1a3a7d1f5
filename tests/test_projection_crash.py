"""A projection on a sqlite log survives SIGKILL: nothing folded twice, nothing skipped.

Each round a child process (``projection_crash_child.py``) publishes a fresh range
of numbers into a sqlite channel folded by a projection with the default
checkpoint settings. The test kills it with SIGKILL once it has published a
seeded-random number of events (sometimes none, so a resume gets killed too),
then starts it again; a last round runs to completion. Then the projection,
started once more, must hold every number whose ``publish_many`` returned, and no
number twice: a kill between two checkpoints costs a catch-up from the log, and
the group's redeliveries of what the catch-up folded are skipped.
"""

from __future__ import annotations

import collections
import random
from pathlib import Path

import crashes
import projection_crash_child as child
from crashes import kill_rounds, published_since

CHILD = Path(__file__).resolve().parent / "projection_crash_child.py"
PER_ROUND = 250


def test_a_projection_killed_at_random_points_folds_every_event_once(tmp_path: Path) -> None:
    rng = random.Random(14)
    db, out = tmp_path / "crash.db", tmp_path / "effects.log"
    kills = 4
    targets = [rng.choice([0, rng.randrange(1, PER_ROUND)]) for _ in range(kills)]
    kill_rounds(
        CHILD,
        db,
        out,
        kills=kills,
        per_round=PER_ROUND,
        ready=lambda r, lines: published_since(lines, r) >= targets[r],
    )
    lines = crashes.lines(out)
    published = {int(line.split()[1]) for line in lines if line.startswith("P ")}
    with child.topology(str(db)).start() as system:
        numbers = system.projection("seen").state["numbers"]
        rebuilt = system.rebuild_projection("seen").state["numbers"]
    twice = [n for n, times in collections.Counter(numbers).items() if times > 1]
    assert twice == [], f"folded twice: {twice[:10]}"
    missing = sorted(published - set(numbers))
    assert missing == [], f"published but never folded: {missing[:10]}"
    # What was committed but killed before its "P" line may be folded too, once.
    assert set(numbers) <= set(range((kills + 1) * PER_ROUND))
    assert sorted(rebuilt) == sorted(numbers)
