"""Every error reactor raises, rooted at :class:`ReactorError`.

Each class also subclasses the built-in exception that fits it, so callers can
catch ``ValueError`` or ``TimeoutError`` without knowing reactor's names.
Messages name the actor, topic, channel or file involved and say what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "BatchFailed",
    "ConsumerFailing",
    "NotInHandlerError",
    "BackpressureError",
    "BackpressureTimeout",
    "ChannelFull",
    "ChannelOpenError",
    "ClockError",
    "DecodeError",
    "EventTooLargeError",
    "IdleTimeout",
    "ImmutableMessageError",
    "InvalidTopicError",
    "LogFormatError",
    "LogLockedError",
    "NotAnEventError",
    "NotDurableError",
    "ReactorError",
    "RequestTimeout",
    "RedisUnavailable",
    "ResultError",
    "ScheduleError",
    "SagaStuck",
    "SupervisorEscalation",
    "SystemStoppedError",
    "TopologyError",
    "UnknownActorError",
    "UnknownChannelError",
    "UnknownDeadLetterError",
    "UnknownGroupError",
    "UnknownProjectionError",
    "UnknownSagaError",
    "Unretryable",
    "UpcastError",
    "UsageError",
    "ChaosError",
    "ChaosOutage",
    "CrashRequested",
]


class ReactorError(Exception):
    """Base class of every error raised by reactor."""


class ImmutableMessageError(ReactorError, TypeError):
    """A payload holds a value that :func:`reactor.freeze` cannot make immutable.

    Attributes:
        path: where the value sits, as Python subscripts (``data['items'][2]``).
        value_type: the type that was refused.
    """

    def __init__(self, path: str, value_type: type) -> None:
        self.path = path
        self.value_type = value_type
        super().__init__(
            f"{path} is a {value_type.__module__}.{value_type.__qualname__}, which reactor "
            "cannot make immutable; pass dicts, lists, tuples, sets, scalars, or frozen "
            "attrs/dataclass instances instead"
        )


class InvalidTopicError(ReactorError, ValueError):
    """A topic or a subscription pattern is malformed."""


class DecodeError(ReactorError, ValueError):
    """Bytes from a broker or a file could not be decoded into an :class:`~reactor.Event`."""


class TopologyError(ReactorError, ValueError):
    """A topology is invalid. ``problems`` lists every problem found, not just the first.

    Attributes:
        problems: one human-readable line per problem.
    """

    def __init__(self, problems: Sequence[str] | str, *, source: str | None = None) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        self.source = source
        where = f" in {source}" if source else ""
        if len(self.problems) == 1:
            message = f"invalid topology{where}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {problem}" for problem in self.problems)
            message = f"invalid topology{where}, {len(self.problems)} problems:\n{lines}"
        super().__init__(message)


class UnknownChannelError(ReactorError, LookupError):
    """A channel name that the running system does not have."""


class UnknownGroupError(ReactorError, LookupError):
    """A consumer group that the channel does not have (join or replay of an undeclared group)."""


class UnknownActorError(ReactorError, LookupError):
    """An actor name that a metrics snapshot does not hold."""


class UnknownProjectionError(ReactorError, LookupError):
    """A projection name that the running system does not have."""


class ResultError(ReactorError, TypeError):
    """A handler returned something that is not an event, a pair, or an iterable of them."""


class UsageError(ReactorError, ValueError):
    """A bad command line, target or face option; the message says what to do.

    The ``reactor`` command exits with code 2 on it.
    """


class UnknownDeadLetterError(ReactorError, LookupError):
    """A dead-letter id that the channel's store does not hold (redriven or purged already?)."""


class BackpressureError(ReactorError):
    """Base class for a publish refused because a channel is at capacity."""


class BackpressureTimeout(BackpressureError, TimeoutError):
    """``publish`` waited its whole timeout for capacity on a ``block`` channel."""


class ChannelFull(BackpressureError):
    """``publish`` on a full channel whose overflow policy is ``reject``."""


class SystemStoppedError(ReactorError, RuntimeError):
    """The system is stopping or stopped, so it accepts no more events."""


class SupervisorEscalation(ReactorError, RuntimeError):
    """A supervisor exceeded its restart intensity and gave up.

    Attributes:
        supervisor: the name of the supervisor that gave up.
        chain: the supervisors the failure climbed through, innermost first.
        reason: the last failure that made the innermost supervisor give up.
    """

    def __init__(self, supervisor: str, chain: Sequence[str], reason: BaseException | None) -> None:
        self.supervisor = supervisor
        self.chain = tuple(chain)
        self.reason = reason
        path = " -> ".join(self.chain)
        cause = f": {type(reason).__name__}: {reason}" if reason is not None else ""
        super().__init__(
            f"supervisor {supervisor!r} exceeded its restart intensity (escalated through "
            f"{path}){cause}; raise max_restarts/within_s or fix the failing child"
        )


class IdleTimeout(ReactorError, TimeoutError):
    """``wait_idle`` ran out of time with events still unsettled."""


class ClockError(ReactorError, ValueError):
    """A clock was asked to do what time cannot (a fake clock moved backwards)."""


class ScheduleError(ReactorError, ValueError):
    """A bad ``delay`` or ``at`` for a delayed event (negative, naive, both given)."""


class RedisUnavailable(ReactorError, RuntimeError):
    """The redis backend is used but redis-py is not installed."""


class LogLockedError(ReactorError, RuntimeError):
    """Another process (or another open channel) already owns this log for writing."""


class LogFormatError(ReactorError, ValueError):
    """The file is not a reactor log: corrupted, foreign, or from a newer reactor."""


class NotAnEventError(ReactorError, TypeError):
    """An item handed to ``publish_many`` (or a router) is not an :class:`~reactor.Event`.

    Raised before anything is published or any capacity is taken.

    Attributes:
        index: the position of the first such item.
        value_type: its type.
    """

    def __init__(self, channel: str, index: int, value_type: type) -> None:
        self.index = index
        self.value_type = value_type
        super().__init__(
            f"publish to channel {channel!r}: item {index} is a {value_type.__module__}."
            f"{value_type.__qualname__}, not a reactor.Event; nothing was published. Make "
            "each item with Event.create(topic, data, key=...), or publish one payload with "
            "system.publish(channel, topic, data)"
        )


class NotDurableError(ReactorError, TypeError):
    """The operation needs a channel that keeps a log (``replay`` on a ``memory`` channel)."""


class ConsumerFailing(ReactorError, RuntimeError):
    """A consumer failed event after event, with no success between.

    Not one event's fault: the consumer itself (or what it depends on) is broken.
    This is a consumer failure, which restart intensity counts.
    """


class NotInHandlerError(ReactorError, RuntimeError):
    """:func:`reactor.current_delivery` was called outside a consumer's handler."""


class ChannelOpenError(ReactorError, OSError):
    """A channel cannot be opened: its log's folder is missing, its file cannot be
    created or read. The message names the channel's file and what to do."""


class RequestTimeout(ReactorError, TimeoutError):
    """No reply came to a request in time: see :meth:`reactor.System.request`."""


class ChaosError(ReactorError, RuntimeError):
    """A failure injected on purpose by a consumer's ``chaos`` declaration."""


class ChaosOutage(ChaosError, ConnectionError):
    """The broker outage a consumer's ``chaos`` declares: every call fails until it ends."""


class CrashRequested(ReactorError, RuntimeError):
    """An actor crashed because it was told to (``system.controls.crash``, a presenter key)."""


class BatchFailed(ReactorError, RuntimeError):
    """Raised by a batch handler to fail only some events of its batch.

    ``failed`` maps the id of each event that failed to why: an exception (its
    type and message are kept, as for a raising handler) or a message. Every
    other event of the batch counts as handled and is acked, and ``outputs`` are
    published for them first. A failed event goes through the usual failure
    rules (a retry after a delay, later events of its key waiting, a dead letter
    after ``max_deliveries``).

    Args:
        failed: event id -> the exception, or a message, it failed with.
        outputs: the events to publish (``reactor.Event`` s), as a batch handler's
            return value would be.
    """

    def __init__(
        self, failed: Mapping[str, BaseException | str], outputs: Iterable[Any] | None = None
    ) -> None:
        self.failed: dict[str, BaseException | str] = dict(failed)
        self.outputs: Any = outputs
        super().__init__(f"{len(self.failed)} event(s) of the batch failed")


class EventTooLargeError(ReactorError, ValueError):
    """An event is bigger, encoded, than its channel's ``max_event_size``; it was not published.

    Raised at publish, before the event (or any event of the same ``publish_many``)
    enters the channel.

    Attributes:
        channel: the channel's name.
        topic: the event's topic.
        event_id: the event's id.
        size: its encoded size in bytes.
        limit: the channel's ``max_event_size``.
    """

    def __init__(self, channel: str, topic: str, event_id: str, size: int, limit: int) -> None:
        self.channel = channel
        self.topic = topic
        self.event_id = event_id
        self.size = size
        self.limit = limit
        super().__init__(
            f"channel {channel!r}: event {event_id} on topic {topic!r} is {size:,} bytes "
            f"encoded, more than the channel's max_event_size of {limit:,} bytes; nothing "
            "was published. Keep events small: store the blob elsewhere (a file, an object "
            "store, a database row) and put its key or URL in the event, or raise the "
            "channel's max_event_size"
        )


class UpcastError(DecodeError):
    """An upcaster failed on an event read back from a channel (see ``upcasters``).

    It raised, or returned something other than a mapping of immutable values. The
    event is dead-lettered at once, as it was stored; fix the upcaster and redrive it.
    """


class UnknownSagaError(ReactorError, LookupError):
    """No saga of that name is declared in the topology."""


class Unretryable(ReactorError):
    """Raised by a handler: no retry can handle this event, dead-letter it at once.

    The consumer dead-letters the event on this attempt, with this error, and does not
    count it toward its ``failure_threshold`` (the event is bad, not the consumer).
    Redrive the letter once what it lacked is fixed.
    """


class SagaStuck(Unretryable, RuntimeError):
    """A saga's compensation failed every attempt: the saga is ``stuck`` and dead-lettered.

    The type named by its dead letter (``error_type``), stored by the saga's channel
    for its group ``$saga.<name>``; its message names the saga, the instance and the
    step. Redriving that letter tries the compensation again.
    """
