"""Internal control messages between reactor's actors.

These are the wire protocol inside one process: channels, consumers, producers
and supervisors talk only through them. All are immutable (frozen, slotted
attrs classes; named tuples for what is made once per event), so a message can
be shared between threads without copying.

Demand protocol (Reactive Streams rule 1.1: never deliver more than asked):
a member joins a group with an initial ``demand``; each :class:`Deliver`
spends one unit per item; each item settled by :class:`Ack` or :class:`Nack`
gives one unit back. A member therefore never holds more than ``demand``
events, whether in its mailbox or in its handler.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import attrs

from reactor.errors import DecodeError

if TYPE_CHECKING:
    from reactor.messages.codecs import Codec
    from reactor.messages.event import Event

__all__ = [
    "Ack",
    "ChildExited",
    "Crash",
    "Deliver",
    "Encoded",
    "ErrorInfo",
    "ExitReason",
    "Join",
    "Leave",
    "Nack",
    "Publish",
    "Release",
    "Tick",
    "Wake",
    "decoded",
    "unreadable",
]


@attrs.frozen(slots=True)
class ErrorInfo:
    """A failure, described without keeping the exception (or its frames) alive."""

    type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
        """Describe ``exc``; ``with_traceback=False`` skips formatting the traceback.

        Formatting a traceback costs more than the rest of a failed delivery; a
        failure that will be retried needs only its type and message.
        """
        text = (
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            if with_traceback
            else ""
        )
        return cls(type=type(exc).__qualname__, message=str(exc), traceback=text)


@attrs.frozen(slots=True)
class Publish:
    """Events that a publisher has already taken capacity credits for."""

    events: tuple[Event, ...]


class Encoded(NamedTuple):
    """An event still in the form a durable log stored it, decoded where it is handled.

    A channel that reads events back from storage may deliver them like this
    rather than as :class:`~reactor.messages.event.Event`: the consumer builds the
    event in its own thread, just before its handler runs, so the event is made
    and dropped by one thread, and the channel's window holds bytes, not objects.
    ``key`` is stored beside the bytes because the channel needs it to keep
    per-key order without decoding.
    """

    key: str | None
    body: bytes
    codec: Codec

    def decode(self) -> Event:
        """The event.

        Raises:
            DecodeError: the stored bytes are not an event (the consumer dead-letters it).
        """
        return self.codec.decode(self.body)


@attrs.frozen(slots=True)
class _Unreadable:
    """The codec of stored bytes a broker field made unusable: decoding always fails."""

    reason: str
    name = "unreadable"
    content_type = "application/octet-stream"

    def encode(self, event: Event) -> bytes:
        raise TypeError("an unreadable entry is never encoded")

    def decode(self, data: bytes) -> Event:
        raise DecodeError(self.reason)


def unreadable(body: bytes, reason: str) -> Encoded:
    """Stored bytes whose broker fields (topic, key) cannot be read, to dead-letter as raw bytes.

    The body may well be an event, but the entry it came in is not one reactor
    can route: its dead letter carries the bytes (``raw``) and ``reason``, not an event.
    """
    return Encoded(None, body, _Unreadable(reason))


def decoded(item: Event | Encoded) -> Event | None:
    """The event ``item`` stands for, decoded if need be; None if its bytes are no event."""
    if not isinstance(item, Encoded):
        return item
    try:
        return item.decode()
    except DecodeError:
        return None


@attrs.frozen(slots=True)
class Deliver:
    """A batch from a channel to one member of one group.

    Three parallel tuples rather than one object per event: a channel builds one
    of these for every batch, and per-event objects were most of its cost. An
    item of ``events`` is an :class:`Encoded` when the channel read it back from
    storage; the consumer decodes it.
    """

    channel: str
    group: str
    epoch: int
    seqs: tuple[int, ...]
    events: tuple[Event | Encoded, ...]
    attempts: tuple[int, ...]
    # seq -> why the previous attempt failed, for the retried events of the batch only.
    failures: Mapping[int, ErrorInfo] | None = None
    # How many of the member's nacks the channel had taken when it made the batch.
    nacks: int = 0

    def __len__(self) -> int:
        return len(self.seqs)


@attrs.frozen(slots=True)
class Join:
    """A member (re)joins a group; the reply is the member's new epoch.

    A rejoin under the same member name hands everything the member still held
    back to the group's queue, in order, and fences off the old incarnation:
    acks carrying an older epoch are ignored.
    """

    group: str
    member: str
    address: Any
    demand: int


@attrs.frozen(slots=True)
class _FromMember:
    """What every message from one incarnation of a member carries: who sent it.

    The channel ignores one whose ``epoch`` is older than the member's: it comes from
    an incarnation that was fenced off.
    """

    group: str
    member: str
    epoch: int


@attrs.frozen(slots=True)
class Leave(_FromMember):
    """A member leaves its group; whatever it held is queued for the others.

    ``epoch`` 0 means "whatever the incarnation": sent by the supervisor when it
    removes the member for good.
    """


@attrs.frozen(slots=True)
class _Settled(_FromMember):
    """A member's word on ``seqs``, events the channel delivered to it."""

    seqs: tuple[int, ...]


@attrs.frozen(slots=True)
class Ack(_Settled):
    """The handler returned for these sequence numbers."""


@attrs.frozen(slots=True)
class Nack(_FromMember):
    """The handler failed on ``seq``; redeliver it or dead-letter it.

    ``final`` says that no retry can succeed (the stored bytes are not an event):
    the channel dead-letters it at once, with its bytes. ``delay`` is how long the
    retry waits (seconds); later events of the same key wait behind it.
    """

    seq: int
    error: ErrorInfo
    consumer: str
    final: bool = False
    delay: float = 0.0


@attrs.frozen(slots=True)
class Release(_Settled):
    """The member gives back seqs it never handled; no attempt is spent.

    A consumer sends it for the events of its batch behind a failed event of the
    same key: they must wait for that event's retry, not overtake it.
    """


ExitKind = Literal["normal", "crash", "timeout", "escalated"]


@attrs.frozen(slots=True)
class ExitReason:
    """Why an actor incarnation ended."""

    kind: ExitKind
    error: ErrorInfo | None = None
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def abnormal(self) -> bool:
        return self.kind != "normal"


@attrs.frozen(slots=True)
class ChildExited:
    """A supervised child's incarnation ended; sent to its supervisor."""

    name: str
    incarnation: int
    reason: ExitReason


@attrs.frozen(slots=True)
class Tick:
    """A timer fired; ``token`` tells the receiver which timer."""

    token: Any = None


@attrs.frozen(slots=True)
class Crash:
    """Tells an actor to crash as if its own code had raised (a presenter, a test)."""

    reason: str


@attrs.frozen(slots=True)
class Wake:
    """Wakes an actor blocked on its mailbox so it notices a stop request."""
