"""Frozen snapshots of a running system: what ``metrics()`` and ``health()`` return."""

from __future__ import annotations

from typing import Literal

import attrs

from reactor.actors.counters import LatencySnapshot
from reactor.channels.backend import ChannelMetrics, GroupMetrics
from reactor.errors import UnknownActorError, UnknownChannelError, UnknownGroupError

__all__ = ["ActorMetrics", "Health", "SystemMetrics"]


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


@attrs.frozen(slots=True)
class SystemMetrics:
    """A whole system at one moment; safe to keep, share and serialise."""

    name: str
    state: str
    uptime_s: float
    actors: tuple[ActorMetrics, ...]
    channels: tuple[ChannelMetrics, ...]

    def actor(self, name: str) -> ActorMetrics:
        """The metrics of the actor called ``name``.

        Raises:
            UnknownActorError: no such actor (also a ``LookupError``).
        """
        for actor in self.actors:
            if actor.name == name:
                return actor
        known = ", ".join(actor.name for actor in self.actors) or "none"
        raise UnknownActorError(
            f"system {self.name!r} has no actor named {name!r} in this snapshot (actors: {known})"
        )

    def channel(self, name: str) -> ChannelMetrics:
        """The statistics of the channel called ``name``.

        Raises:
            UnknownChannelError: no such channel (also a ``LookupError``).
        """
        for channel in self.channels:
            if channel.name == name:
                return channel
        known = ", ".join(channel.name for channel in self.channels) or "none"
        raise UnknownChannelError(
            f"system {self.name!r} has no channel named {name!r} (channels: {known})"
        )

    def group(self, channel: str, group: str) -> GroupMetrics:
        """The statistics of ``group`` on ``channel``.

        Raises:
            UnknownChannelError: no such channel. UnknownGroupError: no such group.
        """
        groups = self.channel(channel).groups
        for stats in groups:
            if stats.name == group:
                return stats
        known = ", ".join(stats.name for stats in groups) or "none"
        raise UnknownGroupError(f"channel {channel!r} has no group {group!r} (groups: {known})")

    def to_dict(self) -> dict[str, object]:
        """Plain dicts and lists, ready for ``json.dumps``."""
        return attrs.asdict(self, recurse=True)


@attrs.frozen(slots=True)
class Health:
    """Overall health: ``ok``, ``degraded`` (something restarting, failed or full),
    ``failed`` (the root supervisor gave up) or ``stopped``."""

    status: Literal["ok", "degraded", "failed", "stopped", "starting"]
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"
