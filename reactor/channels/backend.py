"""What every channel backend provides, and the value types it reports.

The runtime talks to a channel through its :class:`Channel` handle (a gate for
capacity, an address for messages, a way to start an incarnation, statistics)
and through the messages of :mod:`reactor.messages.control`. It never asks which
backend it has: ``memory`` today, durable logs and brokers behind the same face.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from reactor.actors.address import Address
from reactor.channels.gate import CapacityGate, Overflow
from reactor.messages.freeze import FrozenDict

if TYPE_CHECKING:
    from reactor.actors.base import ActorContext, ReactorActor
    from reactor.channels.dedup import DedupWindow
    from reactor.clock import Clock
    from reactor.messages.event import Event

__all__ = [
    "CarriesReplies",
    "Channel",
    "Checkpoint",
    "ChannelBackend",
    "ChannelConfig",
    "ChannelParts",
    "ChannelServices",
    "ChannelMetrics",
    "DeadLetter",
    "DeadLetters",
    "DurableDedup",
    "GroupSpec",
    "GroupMetrics",
    "KeepsCheckpoints",
    "ReadsLog",
    "ReportsProblems",
    "Replayable",
]


@attrs.frozen(slots=True)
class GroupSpec:
    """A consumer group's subscription on one channel.

    ``start`` is where a group the channel has never seen begins in a durable
    log: ``"earliest"``, ``"latest"``, an offset or a ``datetime``. The memory
    backend has no history, so it ignores it.
    """

    name: str
    patterns: tuple[str, ...]
    max_deliveries: int = 5
    start: str | int | datetime = "earliest"


@attrs.frozen(slots=True)
class ChannelConfig:
    """Everything a backend needs to open one channel."""

    name: str
    backend: str = "memory"
    capacity: int = 10_000
    overflow: Overflow = "block"
    groups: tuple[GroupSpec, ...] = ()
    max_batch: int = 128
    # The largest encoded event a publish may put in (see reactor.channels.sizes);
    # None: no limit (the $system channel, whose dead letters carry whole events).
    max_event_size: int | None = None


@attrs.frozen(slots=True)
class ChannelServices:
    """What the runtime lends a channel.

    Attributes:
        clock: the system's clock.
        publish_system: publishes a ``$system`` or ``$deadletter`` event; never blocks.
        on_idle: called whenever the channel's gate drops to zero unsettled events.
        rng: random numbers (the jitter of retries); seed it for repeatable runs.
    """

    clock: Clock
    publish_system: Callable[[Event], None]
    on_idle: Callable[[], None] | None = None
    rng: random.Random = attrs.field(factory=random.Random)


@attrs.frozen(slots=True)
class ChannelParts:
    """What every channel handle is made of, before its backend's own parts.

    Attributes:
        config: the channel.
        services: what the runtime lends it.
        gate: its capacity credits.
        address: its actor's mailbox, which outlives the actor's incarnations.
    """

    config: ChannelConfig
    services: ChannelServices
    gate: CapacityGate
    address: Address

    @classmethod
    def open(cls, config: ChannelConfig, services: ChannelServices) -> ChannelParts:
        """A new gate and address for the channel ``config`` describes."""
        gate = CapacityGate(config.name, config.capacity, config.overflow, services.on_idle)
        return cls(config, services, gate, Address(f"channel:{config.name}"))


@attrs.frozen(slots=True)
class GroupMetrics:
    """One group on one channel, at one moment."""

    name: str
    patterns: tuple[str, ...]
    members: int
    backlog: int
    in_flight: int
    delivered: int
    acked: int
    nacked: int
    redelivered: int
    dead_lettered: int
    expired: int = 0  # deleted by retention before this group settled them (durable logs)


@attrs.frozen(slots=True)
class ChannelMetrics:
    """One channel at one moment."""

    name: str
    backend: str
    capacity: int
    overflow: str
    unsettled: int
    peak_unsettled: int
    published: int
    delivered: int
    acked: int
    dropped: int
    dead_lettered: int
    unrouted: int
    backlog: int
    in_flight: int
    groups: tuple[GroupMetrics, ...]
    expired: int = 0  # events retention deleted before some group settled them
    # Dead letters kept in the channel's store now (see DeadLetters); this process's view.
    stored_dead_letters: int = 0
    # Dead letters a bounded store dropped, oldest first, to stay in its bound (memory).
    evicted_dead_letters: int = 0
    # Delayed events waiting in the channel's scheduled area now, not yet due (redis: as
    # of this process's last look, across every process on the stream).
    scheduled: int = 0


def _frozen(where: Mapping[str, Any]) -> FrozenDict[str, Any]:
    return FrozenDict(where)


@attrs.frozen(slots=True)
class DeadLetter:
    """A dead letter as a channel stores it: what failed, where, why, and how often.

    Attributes:
        id: the letter's id in its channel's store (what ``redrive``/``purge`` take).
        channel: the channel the event was published on.
        group: the consumer group that gave up on it; a redrive delivers it to
            this group only.
        consumer: the consumer whose last attempt failed (empty when no handler
            ran: stored bytes that are no event, or deliveries a crash abandoned).
        event: the event; None when the stored bytes are no event.
        raw: the stored bytes when they are no event (else None).
        where: where the backend kept the bytes (``offset``, ``entry_id``); may be empty.
        error_type: the exception's type name (``DecodeError``, ``DeliveryAbandoned``, ...).
        message: the exception's message.
        traceback: the formatted traceback (empty when there was none).
        attempts: the deliveries spent on it.
        time: when it was dead-lettered (UTC).
    """

    id: str
    channel: str
    group: str
    consumer: str
    event: Event | None
    raw: bytes | None
    where: FrozenDict[str, Any] = attrs.field(converter=_frozen)
    error_type: str
    message: str
    traceback: str
    attempts: int
    time: datetime

    @staticmethod
    def stamp(wall: float) -> datetime:
        """The ``time`` of a letter dead-lettered at wall time ``wall`` (Unix seconds)."""
        return datetime.fromtimestamp(wall, UTC)


class Channel(Protocol):
    """An opened channel, as the runtime sees it."""

    name: str
    config: ChannelConfig
    gate: CapacityGate
    address: Address

    def start_actor(self, context: ActorContext) -> ReactorActor:
        """Start one incarnation of the channel's actor on ``context.address``."""

    def send(self, events: tuple[Event, ...]) -> None:
        """Hand events the publisher holds credits for to the channel.

        Runs in the publisher's thread. A durable backend returns only once the
        events are stored; the memory backend just queues them for its actor.
        """

    def schedule(self, events: tuple[Event, ...], due: float, timeout: float | None) -> int:
        """Keep ``events`` in the channel's scheduled area until wall time ``due``.

        Runs in the publisher's thread; takes no credits (a scheduled event takes
        them when it falls due and enters the channel). A durable backend returns
        once the events are stored. The memory backend bounds its area by the
        channel's capacity and applies the overflow policy there.

        Returns:
            How many were kept (fewer only under ``drop_newest`` on a full memory area).

        Raises:
            BackpressureTimeout / ChannelFull: a full memory area (``block`` / ``reject``).
            SystemStoppedError: the channel was closed.
            EventTooLargeError: an event is bigger, encoded, than ``max_event_size``
                (nothing was scheduled).
        """

    def check_sizes(self, events: Sequence[Event]) -> None:
        """Refuse events bigger, encoded, than ``config.max_event_size``, before any is sent.

        :meth:`send` and :meth:`schedule` check their own events; a publish split
        into several sends (by capacity) calls this first, so that nothing of it
        enters the channel when one event is too big.

        Raises:
            EventTooLargeError: naming the first such event.
        """

    def stats(self) -> ChannelMetrics:
        """A snapshot of the channel's counters; never blocks the channel."""

    def close(self) -> None:
        """Release resources (files, connections) once the actor has stopped."""


class ChannelBackend(Protocol):
    """Opens channels of one kind, chosen by the URL scheme of ``ChannelConfig.backend``."""

    scheme: str

    def open(self, config: ChannelConfig, services: ChannelServices) -> Channel:
        """Open (create or attach to) the channel described by ``config``."""


# Optional capabilities: a backend offers them by having the method; the runtime
# checks with isinstance() and never by backend name.


@runtime_checkable
class Replayable(Protocol):
    """A channel that keeps a log and can rewind a group over it."""

    def replay(self, group: str, from_: Any = "earliest") -> int:
        """Rewind ``group``; return the first offset it will be given again."""


@runtime_checkable
class DeadLetters(Protocol):
    """A channel that stores its dead letters and lets them be listed, redriven and purged.

    Every backend offers it: ``memory`` keeps the latest ones in the process (a
    bound per channel), ``sqlite`` in its log file, ``redis`` in a stream beside
    the channel's. Thread-safety: every method may be called from any thread.
    """

    def dead_letters(self, group: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        """The stored letters (of ``group`` only, if given), oldest first, at most ``limit``."""

    def redrive(self, ids: Collection[str] | None = None, group: str | None = None) -> int:
        """Deliver letters again, each to the group that gave up on it, with a fresh attempt count.

        The letters (all, those of ``group``, or those named by ``ids``) leave the
        store. Letters whose bytes are no event cannot be delivered: they stay
        (purge them). Returns how many were redriven.

        Raises:
            UnknownDeadLetterError: an id names no stored letter; nothing was redriven.
        """

    def purge(self, ids: Collection[str] | None = None, group: str | None = None) -> int:
        """Delete letters (all, those of ``group``, or those named by ``ids``); returns how many.

        Raises:
            UnknownDeadLetterError: an id names no stored letter; nothing was purged.
        """


@runtime_checkable
class CarriesReplies(Protocol):
    """A channel whose broker carries replies to requesters in other processes.

    A process that sends requests over such a channel has an inbox there (named by
    its :class:`~reactor.runtime.replies.Replies`), opened on its first request; a
    consumer in any process sends its reply to the requester's inbox.
    """

    def send_reply(self, inbox: str, reply: Event) -> None:
        """Put ``reply`` in the inbox ``inbox``, wherever its process runs."""

    def open_inbox(self, inbox: str, deliver: Callable[[Event], object]) -> None:
        """Start handing what arrives in ``inbox`` to ``deliver`` (once; later calls do nothing)."""


@runtime_checkable
class DurableDedup(Protocol):
    """A channel that keeps idempotent consumers' handled ids in its own store."""

    def dedup_window(self, group: str, size: int) -> DedupWindow:
        """The dedup window of ``group``, surviving restarts of the process."""


@runtime_checkable
class ReportsProblems(Protocol):
    """A channel that can be unhealthy on its own (a broker connection lost)."""

    def problems(self) -> tuple[str, ...]:
        """What is wrong right now, one line each; empty when healthy."""


@attrs.frozen(slots=True)
class Checkpoint:
    """A projection's position stored with its state, as a durable channel keeps them.

    Attributes:
        position: every event at or below this position (offset, entry) is folded
            into ``state`` (or was given up: dead-lettered).
        state: the read model, as JSON text (tagged, as :class:`~reactor.messages.codecs.JsonCodec`
            writes event data).
        above: the positions above ``position`` folded into ``state`` too (events
            are folded out of order around a failed one).
    """

    position: int
    state: str
    above: tuple[int, ...] = ()


@runtime_checkable
class KeepsCheckpoints(Protocol):
    """A channel that stores projections' checkpoints in its own store (file or broker).

    A checkpoint is written whole or not at all: one transaction on ``sqlite``, one
    ``MULTI``/``EXEC`` on ``redis``. Thread-safety: may be called from any thread.
    """

    def load_checkpoint(self, name: str) -> Checkpoint | None:
        """The last checkpoint of projection ``name``; None if it never wrote one."""

    def save_checkpoint(self, name: str, checkpoint: Checkpoint) -> bool:
        """Replace projection ``name``'s checkpoint; False if the channel is closed already."""


@runtime_checkable
class ReadsLog(Protocol):
    """A channel whose log can be read back in order, outside any consumer group.

    Positions are those of :attr:`reactor.Delivery.position`. Thread-safety: may be
    called from any thread.
    """

    def read_log(self, group: str, after: int, limit: int) -> list[tuple[int, Event | None]]:
        """Up to ``limit`` ``(position, event)`` above ``after`` that ``group`` may be given.

        The event is None where the stored bytes are no event, or the entry is
        not for ``group`` (a redrive's, for another group).
        """

    def log_head(self) -> int:
        """The position of the newest event in the log (0 if it is empty)."""

    def settled(self, group: str) -> int:
        """A position at or below which ``group`` has settled (acked, dead-lettered) every event.

        It may lag behind the group's latest acks, never lead them.
        """
