"""Frozen snapshots of a running system: what ``metrics()`` and ``health()`` return."""

from __future__ import annotations

from typing import Literal, Protocol, TypeVar

import attrs

from reactor.actors.counters import ActorCounters, LatencySnapshot
from reactor.channels.backend import ChannelMetrics, GroupMetrics
from reactor.errors import UnknownActorError, UnknownChannelError, UnknownGroupError

__all__ = [
    "ActorMetrics",
    "Health",
    "ProjectionMetrics",
    "SagaMetrics",
    "SystemMetrics",
    "actor_metrics",
]


class _HasName(Protocol):
    @property
    def name(self) -> str: ...


_Named = TypeVar("_Named", bound=_HasName)


@attrs.frozen(slots=True)
class ActorMetrics:
    """One actor (consumer, pool member, producer, channel or supervisor) at one moment.

    ``state`` is one of ``starting``, ``running``, ``restarting``, ``stopping``,
    ``stopped``, ``failed``.
    """

    name: str
    kind: str
    supervisor: str
    state: str
    restarts: int
    received: int
    handled: int
    failed: int
    in_flight: int
    mailbox: int
    latency: LatencySnapshot
    event_failures: int = 0  # handler calls that raised; ``failed`` counts crashed incarnations
    batches: int = 0  # batches handled by a batch consumer (``handled / batches``: mean size)


@attrs.frozen(slots=True)
class ProjectionMetrics:
    """One projection at one moment (its state is read with ``System.projection``).

    Attributes:
        name: the projection (and its consumer and group).
        channel: the channel it folds.
        position: the highest position folded.
        folded: events folded since the system started.
        failed: ``apply`` calls that raised.
        lag: events the channel still owes it (its group's backlog and in flight).
        checkpoints: checkpoints written since the system started (durable logs).
    """

    name: str
    channel: str
    position: int
    folded: int
    failed: int
    lag: int
    checkpoints: int


@attrs.frozen(slots=True)
class SagaMetrics:
    """One saga's instances by state, as its store counts them (every process's, on
    a durable channel)."""

    name: str
    channel: str
    running: int = 0
    compensating: int = 0
    completed: int = 0
    compensated: int = 0
    stuck: int = 0

    @property
    def active(self) -> int:
        """Instances not finished: running or compensating."""
        return self.running + self.compensating


@attrs.frozen(slots=True)
class SystemMetrics:
    """A whole system at one moment; safe to keep, share and serialise."""

    name: str
    state: str
    uptime_s: float
    actors: tuple[ActorMetrics, ...]
    channels: tuple[ChannelMetrics, ...]
    requests_waiting: int = 0  # requests (System.request) waiting for their reply
    late_replies: int = 0  # replies that came after their request gave up: dropped
    projections: tuple[ProjectionMetrics, ...] = ()
    sagas: tuple[SagaMetrics, ...] = ()  # instances of each saga by state

    def actor(self, name: str) -> ActorMetrics:
        """The metrics of the actor called ``name``.

        Raises:
            UnknownActorError: no such actor (also a ``LookupError``).
        """
        return _named(self.actors, name, self.name, UnknownActorError, _NO_ACTOR)

    def channel(self, name: str) -> ChannelMetrics:
        """The statistics of the channel called ``name``.

        Raises:
            UnknownChannelError: no such channel (also a ``LookupError``).
        """
        return _named(self.channels, name, self.name, UnknownChannelError, _NO_CHANNEL)

    def group(self, channel: str, group: str) -> GroupMetrics:
        """The statistics of ``group`` on ``channel``.

        Raises:
            UnknownChannelError: no such channel. UnknownGroupError: no such group.
        """
        return _named(self.channel(channel).groups, group, channel, UnknownGroupError, _NO_GROUP)

    def to_dict(self) -> dict[str, object]:
        """Plain dicts and lists, ready for ``json.dumps``."""
        return attrs.asdict(self, recurse=True)


# What a lookup by name says when the name is unknown: the owner, the name, and the
# names there are, so the caller sees its typo at once.
_NO_ACTOR = "system {owner!r} has no actor named {name!r} in this snapshot (actors: {known})"
_NO_CHANNEL = "system {owner!r} has no channel named {name!r} (channels: {known})"
_NO_GROUP = "channel {owner!r} has no group {name!r} (groups: {known})"


def _named(
    items: tuple[_Named, ...], name: str, owner: str, unknown: type[LookupError], message: str
) -> _Named:
    """The item of ``items`` called ``name``, else ``unknown`` with ``message`` filled in."""
    for item in items:
        if item.name == name:
            return item
    known = ", ".join(item.name for item in items) or "none"
    raise unknown(message.format(owner=owner, name=name, known=known))


@attrs.frozen(slots=True)
class Health:
    """Overall health: ``ok``, ``degraded`` (something restarting, failed or full),
    ``failed`` (the root supervisor gave up) or ``stopped``."""

    status: Literal["ok", "degraded", "failed", "stopped", "starting"]
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# The fields of an ActorMetrics that are its actor's counters of the same name.
_COUNTED = (
    "state",
    "restarts",
    "received",
    "handled",
    "failed",
    "in_flight",
    "event_failures",
    "batches",
)


def actor_metrics(
    name: str, kind: str, supervisor: str, counters: ActorCounters, *, mailbox: int
) -> ActorMetrics:
    """The snapshot of one actor, from its counters (read without locking them)."""
    counted = {field: getattr(counters, field) for field in _COUNTED}
    return ActorMetrics(
        name, kind, supervisor, mailbox=mailbox, latency=counters.latency.snapshot(), **counted
    )
