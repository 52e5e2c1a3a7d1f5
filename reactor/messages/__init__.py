"""Layer 1 of reactor: immutable events, topics and codecs.

Everything here is a value: frozen, thread-safe and free of actors. Higher
layers import from this package, never the other way round.
"""

from reactor.messages.codecs import CloudEventsCodec, Codec, JsonCodec
from reactor.messages.event import Event, new_event_id
from reactor.messages.freeze import FrozenDict, freeze, thaw
from reactor.messages.topics import TopicPattern, validate_topic

__all__ = [
    "CloudEventsCodec",
    "Codec",
    "Event",
    "FrozenDict",
    "JsonCodec",
    "TopicPattern",
    "freeze",
    "new_event_id",
    "thaw",
    "validate_topic",
]
