"""Frozen snapshots of a running system: what ``metrics()`` and ``health()`` return."""

from __future__ import annotations

from typing import Literal

import attrs

from reactor.actors.counters import LatencySnapshot
from reactor.channels.backend import ChannelStats, GroupStats

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
    channels: tuple[ChannelStats, ...]

    def actor(self, name: str) -> ActorMetrics:
        """The metrics of the actor called ``name``.

        Raises:
            KeyError: no such actor.
        """
        for actor in self.actors:
            if actor.name == name:
                return actor
        raise KeyError(f"no actor named {name!r} in this snapshot")

    def channel(self, name: str) -> ChannelStats:
        """The statistics of the channel called ``name``.

        Raises:
            KeyError: no such channel.
        """
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(f"no channel named {name!r} in this snapshot")

    def group(self, channel: str, group: str) -> GroupStats:
        """The statistics of ``group`` on ``channel``.

        Raises:
            KeyError: no such channel or group.
        """
        for stats in self.channel(channel).groups:
            if stats.name == group:
                return stats
        raise KeyError(f"channel {channel!r} has no group {group!r}")

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
