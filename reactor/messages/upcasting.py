"""Upcasters: old versions of an event's data turned into the current one, step by step.

An event carries the schema version of its data (:attr:`~reactor.Event.version`,
1 unless given). A channel can be given upcasters, per topic and version: the
function for version ``v`` takes data of version ``v`` and returns it in version
``v + 1``. They form a chain from version 1 up; the version after the last step is
the topic's *current* version. A consumer of the channel is handed every event of
an older version upcast, step by step, to the current one, so its handler sees
only the current shape: events read back from a durable log (written long ago,
replayed, redriven, or written by another process), and, on any backend, events
an older publisher still makes. A projection folds them upcast too, the log it
reads on catch-up and rebuild included.

An upcaster takes the data as it is stored in an event (a read-only mapping, or
whatever the old version held) and returns the new data as a mapping (a ``dict``),
which is frozen like any event's data. The upcast event keeps its id, topic, key,
time, source, flow ids and headers; its version header becomes the current version.
An event already at the current version, or newer (a newer publisher's), is left
as it is.

An upcaster that raises, or returns something other than a mapping of values
:func:`~reactor.freeze` accepts, fails with :class:`~reactor.errors.UpcastError`
naming it, the topic and the version. The consumer dead-letters that event at
once, as it was stored (no retry can change what a function makes of the same
bytes); fix the upcaster, then redrive it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from reactor.errors import ImmutableMessageError, InvalidTopicError, UpcastError
from reactor.messages.control import Encoded
from reactor.messages.event import SCHEMA_VERSION, Event
from reactor.messages.freeze import freeze
from reactor.messages.topics import validate_topic

__all__ = ["Upcaster", "Upcasters", "read", "upcaster_name", "upcaster_problems"]

Upcaster = Callable[[Any], Mapping[str, Any]]
"""Turns the data of one version into the data of the next."""

_Path = tuple[Any, ...]


def upcaster_name(function: Any) -> str:
    """``module:qualified.name`` of an upcaster, as a TOML file refers to it."""
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    if module and name:
        return f"{module}:{name}"
    return repr(function)


def upcaster_problems(upcasters: Any) -> list[tuple[_Path, str]]:
    """What is wrong with a channel's declared ``upcasters``, each with where it is.

    ``upcasters`` should map a topic to a mapping of version (an int >= 1) to a
    callable, the versions forming a chain 1, 2, ..., n with no gap.

    Returns:
        ``(path, message)`` pairs: ``path`` is ``()`` for the whole declaration,
        ``(topic,)`` for one topic's chain, ``(topic, version)`` for one step.
    """
    if not isinstance(upcasters, Mapping):
        return [((), _WANTED + f", got {type(upcasters).__name__}")]
    problems: list[tuple[_Path, str]] = []
    for topic, steps in upcasters.items():
        try:
            validate_topic(topic)
        except (InvalidTopicError, TypeError) as exc:
            problems.append(((topic,), f"upcasters: {exc}"))
            continue
        if not isinstance(steps, Mapping) or not steps:
            problems.append(
                (
                    (topic,),
                    f"upcasters of topic {topic!r} must map versions to functions, "
                    f"e.g. {{1: v1_to_v2}}, got {steps!r}",
                )
            )
            continue
        versions = []
        for version, function in steps.items():
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                problems.append(
                    (
                        (topic, version),
                        f"upcaster of topic {topic!r}: version {version!r} is not a whole "
                        "number >= 1 (versions start at 1: the upcaster for 1 turns version "
                        "1 into 2)",
                    )
                )
                continue
            versions.append(version)
            if not callable(function):
                problems.append(
                    (
                        (topic, version),
                        f"upcaster of topic {topic!r} for version {version} must be a "
                        f"function taking the data and returning the next version's, got "
                        f"{type(function).__name__}: {function!r}",
                    )
                )
        problems += _gaps(topic, versions)
    return problems


_WANTED: Final = (
    "upcasters must map a topic to {version: function}, e.g. "
    "{'order.placed': {1: v1_to_v2, 2: v2_to_v3}}"
)


def _gaps(topic: str, versions: list[int]) -> list[tuple[_Path, str]]:
    if not versions:
        return []
    top = max(versions)
    missing = sorted(set(range(1, top + 1)) - set(versions))
    if not missing:
        return []
    shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
    return [
        (
            (topic,),
            f"upcasters of topic {topic!r} have no step for version {shown} (they have "
            f"{', '.join(map(str, sorted(versions)))}): an event of that version could not "
            f"reach the current version {top + 1}; give every version from 1 to {top} its "
            "upcaster",
        )
    ]


@attrs.frozen(slots=True)
class Upcasters:
    """The upcasters of one channel, checked: per topic, the step of each old version.

    Make one with :meth:`of` from a valid declaration.

    Attributes:
        channel: the channel's name, for errors.
        steps: topic -> the upcasters of versions 1, 2, ... in order.

    Thread-safety: immutable; the upcasters themselves must be safe to call from
    any consumer's thread (plain functions of the data are).
    """

    channel: str
    steps: Mapping[str, tuple[Upcaster, ...]]

    @classmethod
    def of(cls, channel: str, declared: Mapping[str, Mapping[int, Upcaster]]) -> Upcasters | None:
        """The upcasters of ``declared`` (valid: see :func:`upcaster_problems`); None if none."""
        if not declared:
            return None
        steps = {
            topic: tuple(chain[version] for version in sorted(chain))
            for topic, chain in declared.items()
        }
        return cls(channel, MappingProxyType(steps))

    def current(self, topic: str) -> int:
        """The current version of ``topic``'s data on this channel (1 without upcasters)."""
        return len(self.steps.get(topic, ())) + 1

    def upcast(self, event: Event) -> Event:
        """``event`` in the current version of its topic (itself if it is there already).

        Raises:
            UpcastError: an upcaster raised or returned something other than a
                mapping of immutable values.
        """
        steps = self.steps.get(event.topic)
        if steps is None:
            return event
        current = len(steps) + 1
        version = event.version
        if version >= current:
            return event
        data = event.data
        for step in range(version, current):
            data = self._step(event, steps[step - 1], step, data)
        return attrs.evolve(
            event, data=data, headers={**event.headers, SCHEMA_VERSION: str(current)}
        )

    def _step(self, event: Event, upcaster: Upcaster, version: int, data: Any) -> Any:
        where = (
            f"upcaster {upcaster_name(upcaster)} of topic {event.topic!r} on channel "
            f"{self.channel!r} (version {version} to {version + 1}), on event {event.id}"
        )
        try:
            result = upcaster(data)
        except Exception as exc:
            raise UpcastError(
                f"{where} raised {type(exc).__name__}: {exc}; the event is dead-lettered as "
                "it was stored: fix the upcaster, then redrive it"
            ) from exc
        if not isinstance(result, Mapping):
            raise UpcastError(
                f"{where} returned a {type(result).__name__}, not a dict; an upcaster returns "
                "the next version's data as a dict. The event is dead-lettered as it was stored"
            )
        try:
            return freeze(result, "data")
        except ImmutableMessageError as exc:
            raise UpcastError(
                f"{where} returned data that cannot be made immutable: {exc}. The event is "
                "dead-lettered as it was stored"
            ) from exc


def read(item: Event | Encoded, upcasters: Upcasters | None) -> Event:
    """The event a consumer is handed for ``item``: decoded if need be, then upcast.

    Raises:
        DecodeError: the stored bytes are no event, or (:class:`UpcastError`) an
            upcaster failed on it; either way no retry can help, and the consumer
            dead-letters it at once.
    """
    event: Event = item.decode() if isinstance(item, Encoded) else item
    return event if upcasters is None else upcasters.upcast(event)
