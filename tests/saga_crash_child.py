"""Child process for ``test_saga_crash.py``: run sagas on a durable channel until killed.

Usage: ``python tests/saga_crash_child.py WHERE OUT ROUND FIRST COUNT``, ``WHERE`` the
sqlite file, or a ``redis://`` channel URL.

* starts ``COUNT`` instances of saga ``order`` with data ``{"n": FIRST..}`` and, after
  each ``start_saga`` returns, appends ``P instance n`` to ``OUT``;
* the saga's steps: ``reserve`` (a command), ``note`` (a function, which appends
  ``F instance`` to ``OUT``; its compensation appends ``G instance``), ``charge`` and
  ``ship`` (commands). The participant, an idempotent consumer, refuses ``charge``
  when ``n % 4 == 0`` and ``ship`` when ``n % 5 == 0``, so those sagas are compensated;
* waits until no instance (of this round or an earlier, killed one) is active,
  stops cleanly and writes ``DONE round``.

The parent kills it with SIGKILL at random points, then runs it again.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Run from the repository root without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crashes import Effects, child_args

from reactor import Event, Topology
from reactor.testing import wait_for

STEPS = ("reserve", "note", "charge", "ship")


def main() -> int:
    db, out, round_, first, count, _ = child_args()
    effects = Effects(out)
    write = effects.write

    def note(data: Any) -> None:
        write(f"F {data['instance_of']}")

    def unnote(data: Any) -> None:
        write(f"G {data['instance_of']}")

    def participant(event: Event) -> Event:
        n = event.data["n"]
        if event.topic == "charge.do" and n % 4 == 0:
            return event.reply({"why": "declined"}, topic="charge.do.failed")
        if event.topic == "ship.do" and n % 5 == 0:
            return event.reply({"why": "no truck"}, topic="ship.do.failed")
        return event.reply({event.topic.replace(".", "_"): True})

    def tag(event: Event) -> Event:
        # The function steps learn their instance from the data the first reply adds.
        return event.reply({"instance_of": event.correlation_id, "reserve_do": True})

    topo = Topology("sagas")
    topo.channel("orders", backend=db if db.startswith("redis://") else f"sqlite:///{db}")
    saga = topo.saga("order", channel="orders", start_on="order.placed")
    saga.step("reserve", action="reserve.do", compensation="reserve.undo", timeout=600)
    saga.step("note", action=note, compensation=unnote)
    saga.step("charge", action="charge.do", compensation="charge.undo", timeout=600)
    saga.step("ship", action="ship.do", compensation="ship.undo", timeout=600)
    topo.consumer("stock", tag, channel="orders", pattern="reserve.do", idempotent=True)
    topo.consumer(
        "shop",
        participant,
        channel="orders",
        pattern=["reserve.undo", "charge.*", "ship.*"],
        idempotent=True,
    )
    system = topo.start()
    write(f"S {round_}")
    for n in range(first, first + count):
        instance = system.start_saga("order", {"n": n})
        write(f"P {instance} {n}")

    def settled() -> bool:
        return not system.sagas("order", "running") and not system.sagas("order", "compensating")

    wait_for(settled, 120, message="sagas still active")
    effects.finish(system, round_)
    return 0


if __name__ == "__main__":
    sys.exit(main())
