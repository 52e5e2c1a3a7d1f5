"""Child process for ``test_projection_crash.py``: feed a projection on a sqlite log until killed.

Usage: ``python tests/projection_crash_child.py DB OUT ROUND FIRST COUNT``

* a projection ``seen`` (default settings) folds every event's number into a tuple;
  a plain consumer ``work`` of the same channel slows nothing down and shares the log;
* publishes ``COUNT`` events with data ``FIRST .. FIRST+COUNT-1`` in small batches
  and, after each ``publish_many`` returns, appends ``P n`` for each to ``OUT``;
* each event is published with one of five keys, so that per-key order is exercised;
* when everything is published, waits until idle, stops cleanly and writes ``DONE``.

The parent kills it with SIGKILL at random points, then runs it again, and at the
end reads the projection's state: every published number must be in it, once.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Run from the repository root without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reactor import Event, Topology


def seen(state: Any, event: Event) -> Any:
    return {"numbers": (*state["numbers"], event.data)}


def topology(db: str) -> Topology:
    topo = Topology("crash")
    topo.channel("c", backend=f"sqlite:///{db}")
    topo.projection("seen", seen, channel="c", initial={"numbers": ()})
    return topo


def main() -> int:
    db, out, round_, first, count = (
        sys.argv[1],
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
        int(sys.argv[5]),
    )
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(line: str) -> None:
        os.write(fd, (line + "\n").encode())

    system = topology(db).start()
    write(f"S {round_}")
    batch = 7  # small, odd batches: kills land between and inside commits
    for start in range(first, first + count, batch):
        numbers = list(range(start, min(start + batch, first + count)))
        system.publish_many("c", [Event.create("t.x", n, key=f"k{n % 5}") for n in numbers])
        for n in numbers:
            write(f"P {n}")
    system.wait_idle(60)
    system.stop(timeout=30)
    write(f"DONE {round_}")
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
