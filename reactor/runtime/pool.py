"""Pools: N consumer members in one group, scaled between ``min_size`` and ``max_size``.

A pool is a supervisor whose children are interchangeable members of one
consumer group. Every ``interval_s`` it looks at the group's backlog:

* backlog per member above ``scale_up_backlog`` for ``up_after`` looks in a row,
  and fewer than ``max_size`` members: one member more;
* no backlog for ``down_after`` looks in a row, and more than ``min_size``
  members: the newest member leaves (whatever it held goes back to the group).

Scaling up is quick and scaling down slow on purpose: a burst is served at once,
and a pause between bursts does not make the pool flap.

A pool with ``min_size = 0`` scales to zero, as a function does: its last member
leaves once the group has had nothing waiting and nothing in flight for
``idle_s``, and while it has no member the pool looks every
:data:`_ZERO_LOOK_S` (or ``interval_s``, if shorter) and starts one as soon as
anything waits: a cold start. Events that arrive meanwhile wait in the channel,
keyed ones in order, so nothing is lost or reordered by scaling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from reactor.actors.base import ActorContext
from reactor.channels.backend import GroupMetrics
from reactor.messages.control import Tick
from reactor.schema import count, seconds
from reactor.supervision.supervisor import ChildSpec, Supervisor, SupervisorConfig

__all__ = ["Pool", "PoolConfig", "PoolScaling"]

_AUTOSCALE = "autoscale"
# How often a pool with no member looks for work: the most a cold start waits to begin.
_ZERO_LOOK_S = 0.01


@attrs.frozen(slots=True)
class PoolScaling:
    """When a pool grows and shrinks.

    Checked with the rest of the topology by ``Topology.validate()``.
    """

    interval_s: float = seconds(
        0.25, "how often the pool looks at its backlog", positive=True, max=3600
    )
    scale_up_backlog: int = count(100, "backlog per member above which the pool grows")
    up_after: int = count(2, "looks in a row over the backlog to grow")
    down_after: int = count(8, "looks in a row without backlog to shrink")
    idle_s: float = seconds(
        10.0,
        "with `min_size = 0`: seconds with nothing to do before the last member leaves",
        min=0,
        max=86_400,
    )


@attrs.frozen(slots=True, eq=False)
class PoolConfig:
    """A pool's members and the statistics it scales on."""

    min_size: int
    max_size: int
    member: Callable[[int], ChildSpec]
    group_stats: Callable[[], GroupMetrics | None]
    scaling: PoolScaling = attrs.field(factory=PoolScaling)
    # Members that scaling added, by name; shared by the pool's incarnations, so that a
    # new one removes those of the last (it starts only ``min_size`` members).
    scaled: dict[str, ChildSpec] = attrs.field(factory=dict)


class Pool(Supervisor):
    """A supervisor of identical group members that autoscales on backlog."""

    def __init__(self, context: ActorContext, config: SupervisorConfig, pool: PoolConfig) -> None:
        initial = tuple(pool.member(index) for index in range(1, pool.min_size + 1))
        super().__init__(context, attrs.evolve(config, children=initial))
        self.pool = pool
        self._next_index = pool.min_size + 1
        self._up_streak = 0
        self._down_streak = 0
        self._idle_since: float | None = None  # clock time since when the group had nothing to do
        self.scale_events: list[tuple[str, int]] = []

    @property
    def size(self) -> int:
        return len(self.children)

    def on_start(self) -> None:
        # An earlier incarnation's scaled-up members were stopped with it and are not
        # started again: their group must hand their keys and events to the others.
        for spec in self.pool.scaled.values():
            if spec.on_removed is not None:
                spec.on_removed()
        self.pool.scaled.clear()
        super().on_start()
        self._arm_autoscale()

    def on_receive(self, message: Any) -> Any:
        if type(message) is Tick and message.token == (_AUTOSCALE, self.actor_incarnation):
            self._autoscale()
            self._arm_autoscale()
            return None
        return super().on_receive(message)

    def _arm_autoscale(self) -> None:
        address, tick = self.actor_address, Tick((_AUTOSCALE, self.actor_incarnation))
        interval = self.pool.scaling.interval_s
        if self.size == 0:
            interval = min(interval, _ZERO_LOOK_S)
        self.actor_clock.call_later(interval, lambda: address.tell(tick))

    def _autoscale(self) -> None:
        stats = self.pool.group_stats()
        if stats is None:
            return
        scaling = self.pool.scaling
        size = self.size
        if stats.backlog or stats.in_flight:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = self.actor_clock.monotonic()
        if size == 0:
            if stats.backlog:
                self._grow()  # a cold start: anything waiting gets a member at once
            return
        if (
            size == 1
            and self.pool.min_size == 0
            and self._idle_since is not None
            and self.actor_clock.monotonic() - self._idle_since >= scaling.idle_s
        ):
            self._shrink()
            return
        if stats.backlog > scaling.scale_up_backlog * max(1, size):
            self._up_streak += 1
            self._down_streak = 0
        elif stats.backlog == 0:
            self._down_streak += 1
            self._up_streak = 0
        else:
            self._up_streak = self._down_streak = 0
        if self._up_streak >= scaling.up_after and size < self.pool.max_size:
            self._grow()
        elif self._down_streak >= scaling.down_after and size > max(1, self.pool.min_size):
            self._shrink()  # to zero only after idle_s, above

    def _grow(self) -> None:
        self._up_streak = 0
        index = self._next_index
        self._next_index += 1
        spec = self.pool.member(index)
        if self._add_child(spec):
            self.pool.scaled[spec.name] = spec
            self.scale_events.append(("up", self.size))

    def _shrink(self) -> None:
        self._down_streak = 0
        newest = self.children[-1]
        self._remove_child(newest.spec.name)
        self.pool.scaled.pop(newest.spec.name, None)
        self.scale_events.append(("down", self.size))
