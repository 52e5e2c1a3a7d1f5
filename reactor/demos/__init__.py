"""The demos behind ``reactor demo NAME`` and ``python demos/NAME.py``.

Each demo is a function that builds a fresh :class:`~reactor.Topology` on the
memory backend (``orders`` also on a durable one: ``--backend``); :data:`DEMOS`
maps a demo's name to its one-line description and that function. Demo code
never prints: what it does shows on the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from rich.console import RenderableType

from reactor.demos import fanout, orders, sensors
from reactor.runtime.system import System
from reactor.runtime.topology import Topology

__all__ = ["DEMOS", "Demo", "Panels"]

Panels = Sequence[tuple[str, Callable[[], RenderableType]]]


@attrs.frozen(slots=True)
class Demo:
    """A runnable demo.

    Attributes:
        name: what ``reactor demo NAME`` calls it.
        description: one line for ``reactor demo``'s list.
        build: makes a new topology each call; a demo that takes a backend URL
            (``durable``) is given the one ``--backend`` names.
        panels: extra dashboard panels for the running system (e.g. a read model),
            or ``None``; called once the system has started.
        durable: ``build`` takes ``backend=URL`` (``reactor demo NAME --backend URL``).
    """

    name: str
    description: str
    build: Callable[..., Topology]
    panels: Callable[[System], Panels] | None = None
    durable: bool = False


DEMOS: dict[str, Demo] = {
    demo.name: demo
    for demo in (
        Demo("sensors", sensors.DESCRIPTION, sensors.build),
        Demo("orders", orders.DESCRIPTION, orders.build, orders.panels, durable=True),
        Demo("fanout", fanout.DESCRIPTION, fanout.build),
    )
}
