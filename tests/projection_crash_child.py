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

from crashes import Effects, child_args

from reactor import Event, Topology


def seen(state: Any, event: Event) -> Any:
    return {"numbers": (*state["numbers"], event.data)}


def topology(db: str) -> Topology:
    topo = Topology("crash")
    topo.channel("c", backend=f"sqlite:///{db}")
    topo.projection("seen", seen, channel="c", initial={"numbers": ()})
    return topo


def main() -> int:
    db, out, round_, first, count, _ = child_args()
    effects = Effects(out)
    system = topology(db).start()
    effects.write(f"S {round_}")
    effects.publish_numbered(
        system, "c", first, count, lambda n: Event.create("t.x", n, key=f"k{n % 5}")
    )
    effects.finish(system, round_)
    return 0


if __name__ == "__main__":
    sys.exit(main())
