"""Where a saga's instances are kept: the records, the store protocol, the memory store.

A saga (:mod:`reactor.runtime.sagas`) keeps one :class:`SagaInstance` per
instance, replaced whole on every change. The store follows the backend of the
saga's channel, which offers it through the :class:`KeepsSagas` capability:
``memory`` keeps the records in this process (:class:`MemorySagaStore`),
``sqlite`` in the channel's log file, ``redis`` under the channel's prefix.
Durable stores write the record as JSON (:func:`encode_instance`), with the
saga's data in :class:`~reactor.JsonCodec`'s tagged form.

Invariant every store keeps: :meth:`SagaStore.save` returns only once the
record is stored (committed, acknowledged by Redis), so a saga that records its
intent before it acts finds that intent again after a crash.
"""

from __future__ import annotations

import heapq
import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from reactor.errors import DecodeError
from reactor.messages.freeze import FrozenDict, freeze
from reactor.messages.jsonvalues import from_json, to_json

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "FINISHED_STATES",
    "SAGA_STATES",
    "KeepsSagas",
    "MemorySagaStore",
    "SagaInstance",
    "SagaStore",
    "SagaStep",
    "decode_instance",
    "encode_instance",
]

# running: actions are being taken; compensating: a step failed and the completed ones
# are being undone; completed, compensated, stuck: final (stuck: a compensation could
# not succeed within its attempts; a dead letter says which).
SAGA_STATES = ("running", "compensating", "completed", "compensated", "stuck")
ACTIVE_STATES = frozenset({"running", "compensating"})
FINAL_STATES = frozenset({"completed", "compensated", "stuck"})
# Final and needing nothing more: these are pruned (SagaStore.prune); stuck ones never are.
FINISHED_STATES = ("completed", "compensated")


def _frozen_data(value: Any) -> FrozenDict[str, Any]:
    return value if isinstance(value, FrozenDict) else freeze(dict(value))


@attrs.frozen(slots=True)
class SagaStep:
    """What a saga instance did with one of its steps.

    Attributes:
        name: the step's name.
        status: ``pending`` (not begun), ``acting`` (its action is sent or running),
            ``done``, ``failed`` (an error reply or an exception: nothing to undo),
            ``timed_out`` (no reply in time: it may have acted, so it is compensated
            too), ``compensating`` (its compensation is sent or running),
            ``retrying`` (its compensation failed and waits for its next attempt),
            ``compensated``, or ``stuck``.
        attempts: times its action was taken (1; 2 when it was sent again).
        compensations: attempts of its compensation so far.
        command: the id of the command (or function call) now outstanding, if any.
        sent: whether that command is known to be sent (False: the intent is recorded,
            the send is not).
        due: wall time (Unix seconds) of its timeout or of its next compensation
            attempt, if one is armed.
        resent: times an action or compensation was sent (or run) again because a
            restart found it recorded but not known to be sent, or its reply lost.
        error: why it failed, or why its last compensation attempt did.
    """

    name: str
    status: str = "pending"
    attempts: int = 0
    compensations: int = 0
    command: str | None = None
    sent: bool = False
    due: float | None = None
    resent: int = 0
    error: str | None = None


@attrs.frozen(slots=True)
class SagaInstance:
    """One instance of a saga, as its store keeps it: a frozen value, safe to share.

    Attributes:
        saga: the saga's name.
        id: the instance id (the id of the event that started it); commands carry it
            as their ``correlation_id``.
        state: ``running``, ``compensating``, ``completed``, ``compensated`` or ``stuck``.
        position: index of the step being taken (running) or undone (compensating).
        data: the saga's data: the start event's data, merged with each reply's.
        steps: one record per declared step, in order.
        started: wall time it started (Unix seconds).
        updated: wall time of its last change.
        error: why it is compensating or stuck (the failed step's error).
        letter: once stuck, the id of the event dead-lettered for it (the one being
            handled when it got stuck); that event coming again (redriven, or
            redelivered after a crash) tries the stuck compensation again.
    """

    saga: str
    id: str
    state: str
    position: int
    data: FrozenDict[str, Any] = attrs.field(converter=_frozen_data)
    steps: tuple[SagaStep, ...]
    started: float
    updated: float
    error: str | None = None
    letter: str | None = None

    @property
    def step(self) -> str | None:
        """The name of the step being taken or undone; None once the saga is final."""
        if self.state in FINAL_STATES or not 0 <= self.position < len(self.steps):
            return None
        return self.steps[self.position].name

    @property
    def resent(self) -> int:
        """Actions and compensations sent (or run) again, over all steps."""
        return sum(step.resent for step in self.steps)

    def with_step(self, index: int, **changes: Any) -> SagaInstance:
        """A copy with step ``index`` changed by ``changes``."""
        steps = list(self.steps)
        steps[index] = attrs.evolve(steps[index], **changes)
        return attrs.evolve(self, steps=tuple(steps))


class SagaStore(Protocol):
    """The instances of one saga on one channel.

    Thread-safety: every method may be called from any thread.
    """

    def load(self, instance: str) -> SagaInstance | None:
        """The instance with id ``instance``, or None."""

    def save(self, record: SagaInstance) -> None:
        """Store ``record`` (replacing the one of its id); returns once it is stored."""

    def instances(self, state: str | None = None) -> list[SagaInstance]:
        """The instances (in ``state`` only, if given), oldest first."""

    def counts(self) -> dict[str, int]:
        """How many instances are in each state (states with none may be left out)."""

    def prune(self, keep: int) -> int:
        """Delete finished instances (:data:`FINISHED_STATES`) beyond the latest ``keep``.

        The oldest-started go first. Returns how many were deleted.
        """


@runtime_checkable
class KeepsSagas(Protocol):
    """A channel that keeps saga instances beside its events."""

    def saga_store(self, saga: str) -> SagaStore:
        """The store of the saga ``saga``, whose channel this is."""


class MemorySagaStore:
    """Saga instances in this process: gone when it ends, as the memory channel's events."""

    def __init__(self) -> None:
        self._records: dict[str, SagaInstance] = {}
        # (started, id) of the finished instances: the oldest-started on top, to prune.
        self._finished: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def load(self, instance: str) -> SagaInstance | None:
        with self._lock:
            return self._records.get(instance)

    def save(self, record: SagaInstance) -> None:
        with self._lock:
            before = self._records.get(record.id)
            self._records[record.id] = record
            if record.state in FINISHED_STATES and (
                before is None or before.state not in FINISHED_STATES
            ):
                heapq.heappush(self._finished, (record.started, record.id))

    def prune(self, keep: int) -> int:
        with self._lock:
            pruned = 0
            while len(self._finished) > keep:
                _, oldest = heapq.heappop(self._finished)
                del self._records[oldest]
                pruned += 1
            return pruned

    def instances(self, state: str | None = None) -> list[SagaInstance]:
        with self._lock:
            records = list(self._records.values())
        return _oldest_first(r for r in records if state is None or r.state == state)

    def counts(self) -> dict[str, int]:
        with self._lock:
            records = list(self._records.values())
        counts: dict[str, int] = {}
        for record in records:
            counts[record.state] = counts.get(record.state, 0) + 1
        return counts


def _oldest_first(records: Iterable[SagaInstance]) -> list[SagaInstance]:
    return sorted(records, key=lambda record: (record.started, record.id))


# -- the stored form of durable stores ----------------------------------------------------


def encode_instance(record: SagaInstance) -> str:
    """``record`` as JSON text; its data in the tagged form of :class:`~reactor.JsonCodec`.

    Raises:
        TypeError: the saga's data holds a value the JSON codec cannot write.
    """
    obj = attrs.asdict(record, recurse=True, filter=lambda field, _: field.name != "data")
    obj["data"] = to_json(record.data, True)
    return json.dumps(obj, separators=(",", ":"))


def decode_instance(text: str | bytes, where: str) -> SagaInstance:
    """The record :func:`encode_instance` wrote.

    Raises:
        DecodeError: ``text`` is no saga record; the message names ``where``.
    """
    try:
        obj = json.loads(text)
        steps = tuple(SagaStep(**step) for step in obj.pop("steps"))
        data = from_json(obj.pop("data"), "data")
        return SagaInstance(steps=steps, data=data if isinstance(data, Mapping) else {}, **obj)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DecodeError(f"{where}: stored saga record is unreadable ({exc})") from exc
