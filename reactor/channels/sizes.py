"""A channel's maximum encoded event size (``max_event_size``), checked at publish.

"Keep event sizes small": a channel refuses, with
:class:`~reactor.errors.EventTooLargeError`, an event whose encoding is bigger
than its limit, before it (or any event of the same publish) enters the channel.
The size is the event's bytes in the channel's codec: what a durable channel
stores (:class:`~reactor.JsonCodec` for ``sqlite``, :class:`~reactor.CloudEventsCodec`
for ``redis``), and for ``memory``, which stores objects, what ``JsonCodec`` would
write, so that a topology keeps its limits when its channels move to a durable backend.

Each backend measures where it is cheapest:

* ``sqlite`` and ``redis`` encode every event they store: they measure those bytes
  (:meth:`EventSizes.check_encoded`), never encoding an event twice;
* ``memory`` encodes nothing: :meth:`EventSizes.check` takes an upper bound
  (:func:`~reactor.messages.sizes.size_bound`, a few C calls for the usual event)
  and encodes only an event whose bound passes the limit.

Only publishing is checked. Bytes read back from a log are never refused, even
past this process's limit: another process, with a larger limit, may have
written them, and refusing them could only lose them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

from reactor.errors import EventTooLargeError
from reactor.messages.codecs import Codec, JsonCodec
from reactor.messages.event import Event
from reactor.messages.sizes import size_bound

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "MAX_EVENT_SIZE_LIMIT", "EventSizes"]

DEFAULT_MAX_EVENT_SIZE: Final = 1_048_576
"""A channel's ``max_event_size`` unless declared: 1 MiB."""
MAX_EVENT_SIZE_LIMIT: Final = 512 * 1_048_576
"""The largest ``max_event_size`` a channel may declare: 512 MiB, a Redis string's limit."""

_MEASURE: Final = JsonCodec()


@attrs.frozen(slots=True)
class EventSizes:
    """The size limit of one channel and how to measure an event against it.

    Attributes:
        channel: the channel's name, for the error.
        limit: its ``max_event_size`` in bytes; None for no limit (``$system``).
        codec: how the channel encodes events (what the size is measured in).

    Thread-safety: immutable; any publisher's thread may call it.
    """

    channel: str
    limit: int | None
    codec: Codec = _MEASURE

    def check(self, events: Sequence[Event]) -> None:
        """Refuse the first event of ``events`` that is too big, before any is sent.

        Raises:
            EventTooLargeError: an event's encoding is bigger than the limit.
        """
        limit = self.limit
        if limit is None:
            return
        for event in events:
            if size_bound(event) > limit:
                try:
                    size = len(self.codec.encode(event))
                except (TypeError, ValueError):
                    # No form in this codec (an Enum member, a lone surrogate, an int of
                    # 5,000 digits): a memory channel holds it all the same, and a durable
                    # one refuses it with this error when it encodes it.
                    continue
                if size > limit:
                    raise self.refusal(event, size)

    def check_encoded(self, events: Sequence[Event], bodies: Sequence[bytes]) -> None:
        """Refuse the first of ``events`` whose encoding (in ``bodies``) is too big.

        Raises:
            EventTooLargeError: a body is bigger than the limit.
        """
        limit = self.limit
        if limit is None or max(map(len, bodies), default=0) <= limit:  # one C loop
            return
        for event, body in zip(events, bodies, strict=True):
            if len(body) > limit:
                raise self.refusal(event, len(body))

    def refusal(self, event: Event, size: int) -> EventTooLargeError:
        """The error refusing ``event``, ``size`` bytes encoded."""
        assert self.limit is not None
        return EventTooLargeError(self.channel, event.topic, event.id, size, self.limit)
