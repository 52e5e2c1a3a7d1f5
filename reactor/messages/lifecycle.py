"""The ``$system`` topics and the events reactor publishes on them."""

from __future__ import annotations

from typing import Any

from reactor.messages.control import Encoded, ErrorInfo, decoded
from reactor.messages.event import Event

__all__ = [
    "ACTOR_FAILED",
    "ACTOR_RESTARTED",
    "ACTOR_STARTED",
    "ACTOR_STOPPED",
    "CHANNEL_DISCONNECTED",
    "CHANNEL_RECONNECTED",
    "DEADLETTER",
    "DRAIN_ABANDONED",
    "EVENT_DROPPED",
    "RETENTION_FORCED",
    "SAGA_COMPENSATED",
    "SAGA_COMPLETED",
    "SAGA_RESENT",
    "SAGA_STARTED",
    "SAGA_STUCK",
    "SUPERVISOR_ESCALATED",
    "SYSTEM_CHANNEL",
    "dead_letter",
    "channel_event",
    "dropped",
    "lifecycle",
    "retention_forced",
    "saga_event",
    "reports_on_system",
]

SYSTEM_CHANNEL = "$system"
ACTOR_STARTED = "$system.actor.started"
ACTOR_FAILED = "$system.actor.failed"
ACTOR_RESTARTED = "$system.actor.restarted"
ACTOR_STOPPED = "$system.actor.stopped"
SUPERVISOR_ESCALATED = "$system.supervisor.escalated"
EVENT_DROPPED = "$system.event.dropped"
# Retention deleted events a group had not settled (sqlite's max_events/max_age,
# redis's maxlen/maxage trimming pending entries).
RETENTION_FORCED = "$system.retention.forced"
# A broker channel lost its connection, and got it back.
CHANNEL_DISCONNECTED = "$system.channel.disconnected"
CHANNEL_RECONNECTED = "$system.channel.reconnected"
DRAIN_ABANDONED = "$system.drain.abandoned"
# A saga instance started, ended (completed, compensated, stuck), or sent a command (or
# ran a function) again after a restart found it recorded but not known to be done.
SAGA_STARTED = "$system.saga.started"
SAGA_COMPLETED = "$system.saga.completed"
SAGA_COMPENSATED = "$system.saga.compensated"
SAGA_STUCK = "$system.saga.stuck"
SAGA_RESENT = "$system.saga.resent"
DEADLETTER = "$deadletter"


def lifecycle(topic: str, actor: str, **data: Any) -> Event:
    """A lifecycle event about ``actor``; ``data`` adds topic-specific fields."""
    return Event.create(topic, {"actor": actor, **data}, key=actor, source="reactor/supervision")


def dead_letter(
    item: Event | Encoded,
    error: ErrorInfo,
    *,
    where: dict[str, Any],
    attempts: int,
    consumer: str,
    group: str,
    channel: str,
) -> Event:
    """The ``$deadletter`` event for what a channel holds, which failed ``attempts`` times.

    ``item`` is the event, or its stored form (decoded here). Stored bytes that
    are no event get a letter whose ``event`` is None, whose ``raw`` holds the
    bytes as they were stored, and ``where`` says where they were (an
    ``offset``, an ``entry_id``).
    """
    letter = {
        "error_type": error.type,
        "message": error.message,
        "traceback": error.traceback,
        "attempts": attempts,
        "consumer": consumer,
        "group": group,
        "channel": channel,
    }
    source = f"reactor/channel/{channel}"
    event = decoded(item)
    if event is not None:
        return event.derive(DEADLETTER, {"event": event, **letter}, source=source)
    raw = item.body if isinstance(item, Encoded) else b""
    return Event.create(DEADLETTER, {"event": None, "raw": raw, **where, **letter}, source=source)


def dropped(event: Event, *, channel: str, policy: str) -> Event:
    """The ``$system.event.dropped`` report for ``event``, dropped by ``policy``.

    It names the victim (``id``, ``topic``, ``key``) and never carries it: a report
    that held the dropped event could itself be dropped, and carried, without end.
    """
    return event.derive(
        EVENT_DROPPED,
        {
            "id": event.id,
            "topic": event.topic,
            "key": event.key,
            "channel": channel,
            "policy": policy,
        },
        source=f"reactor/channel/{channel}",
    )


def channel_event(topic: str, channel: str, **data: Any) -> Event:
    """A ``$system`` event about ``channel`` (keyed by it); ``data`` adds topic-specific fields."""
    return Event.create(
        topic, {"channel": channel, **data}, key=channel, source=f"reactor/channel/{channel}"
    )


def retention_forced(channel: str, group: str, count: int, **where: Any) -> Event:
    """The ``$system.retention.forced`` event: retention deleted ``count`` events ``group`` owed.

    ``where`` says which (``first`` and ``last`` offsets, or stream ``ids``).
    """
    return channel_event(RETENTION_FORCED, channel, group=group, count=count, **where)


def saga_event(topic: str, saga: str, instance: str, **data: Any) -> Event:
    """A ``$system.saga.*`` event about one instance (keyed by it); ``data`` adds fields."""
    return Event.create(
        topic,
        {"saga": saga, "instance": instance, **data},
        key=instance,
        source=f"reactor/saga/{saga}",
    )


def reports_on_system(event: Event) -> bool:
    """Whether ``event`` reports on the ``$system`` channel itself.

    Such a report is never published (the channel and the log count it): a drop or
    dead letter on ``$system`` reported on ``$system`` could feed itself forever,
    for example a subscriber failing on every ``$deadletter``.
    """
    return event.topic in _REPORTS and event.data.get("channel") == SYSTEM_CHANNEL


_REPORTS = frozenset({EVENT_DROPPED, DEADLETTER})
