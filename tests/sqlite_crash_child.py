"""Child process for ``test_sqlite_crash.py``: publish and consume on a sqlite log until killed.

Usage: ``python tests/sqlite_crash_child.py DB OUT ROUND FIRST COUNT [MODE]``

MODE ``strict`` (the default) runs idempotent consumers that never dead-letter
(``max_deliveries=1000``), with a small prefetch. MODE ``defaults`` and ``plain``
run consumers with every delivery setting at its default (``plain``: not
idempotent), each handling an event in about a millisecond, so that a kill finds
full prefetch windows.

* publishes ``COUNT`` events with data ``FIRST .. FIRST+COUNT-1`` in small batches
  and, after each ``publish_many`` returns, appends ``P n`` for each to ``OUT``;
* two idempotent consumers of one group append ``H round member n`` to ``OUT``
  for every event they handle (the side effect), with one ``write`` per line so
  lines from threads never interleave;
* when everything is published, waits until idle, stops cleanly and writes ``DONE``.

The parent kills it with SIGKILL at random points, then runs it again.
"""

from __future__ import annotations

import os
import sys
import time

# Run from the repository root without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crashes import Effects, child_args

from reactor import Event, Topology


def main() -> int:
    db, out, round_, first, count, more = child_args()
    mode = more[0] if more else "strict"
    effects = Effects(out)
    write = effects.write

    def member(name: str):  # type: ignore[no-untyped-def]
        def handle(event: Event) -> None:
            if mode != "strict":
                time.sleep(0.001)  # sleep-ok: the handler's work, not synchronisation
            write(f"H {round_} {name} {event.data}")

        return handle

    topo = Topology("crash")
    if mode == "strict":
        topo.channel("c", backend=f"sqlite:///{db}", capacity=500)
    else:
        topo.channel("c", backend=f"sqlite:///{db}")
    for name in ("m1", "m2"):
        if mode == "strict":
            topo.consumer(
                name,
                member(name),
                channel="c",
                group="g",
                idempotent=True,
                max_deliveries=1000,
                prefetch=32,
            )
        else:
            topo.consumer(name, member(name), channel="c", group="g", idempotent=mode == "defaults")
    system = topo.start()
    write(f"S {round_}")
    effects.publish_numbered(system, "c", first, count, lambda n: Event.create("t.x", n))
    effects.finish(system, round_)
    return 0


if __name__ == "__main__":
    sys.exit(main())
