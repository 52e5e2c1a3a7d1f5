"""Batch consumers: handlers that take their events a batch at a time, as Broadway's batchers.

A consumer declared with ``batch_size`` calls ``handle_batch(events)`` (a function
handler is called with the list) with up to ``batch_size`` events, in delivery
order. A batch is handled once it is full, or ``batch_timeout`` seconds after its
first event arrived, whichever comes first. With ``batch_key`` (a field of dict
data, or a callable ``batch_key(event)``) events are gathered into one batch per
value: a batch holds events of one batch key only, and each waits its own timeout.

How a batch is settled:

* the handler returns: the events it returned (``None``, an event, or an iterable
  of events) are published, then the whole batch is acked in one message;
* it raises :class:`~reactor.errors.BatchFailed` ``({event_id: error}, outputs)``:
  those events fail; the others are handled (``outputs`` published, then acked);
* it raises anything else (or returns something that is not events): every event
  of the batch fails.

A failed event goes through the consumer's failure rules
(:mod:`reactor.runtime.consumer`): a retry after its own delay, later events of its
key waiting behind it, a dead letter after ``max_deliveries``. The later events of
a failed event's key *in the same batch* are not taken as handled, whatever the
handler did with them, and spend no attempt: behind a retried event they go back to
the channel and come again after its retry; behind a dead-lettered one they are
gathered again at once, first in a new batch. So a handler that fails one event of a
key should leave that key's later events in the batch alone.
For the consumer's health (the pause, ``failure_threshold``) a batch is one handler
call: a batch whose events all failed is one failure in a row (a first-delivery
failure if any of them was on its first delivery); a batch with any event handled
is a success.

Invariants:

* per-key order: an event whose ``key`` is in an open batch of another batch key
  makes that batch go first, so an event key is in at most one open batch, and
  batches run in the order their events must;
* events in an open batch are unacked: they count toward ``prefetch`` (validation
  asks ``batch_size <= prefetch``), and a crash gives them back to the group with
  no attempt spent;
* one timer per actor, armed for the oldest open batch's deadline: batches filled
  by size cost no timer each.

One concept, one module: how a consumer gathers, runs and settles batches (the walk
over a delivery, admission and the watched handler call are its base's).

Thread-safety: everything here belongs to the consumer actor's thread.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import attrs

from reactor.actors.base import ActorContext, ReactorActor
from reactor.errors import BatchFailed, ResultError
from reactor.messages.control import Deliver, Encoded, ErrorInfo, Tick
from reactor.messages.event import Event
from reactor.runtime.consumer import ConsumerActor, ConsumerRuntime, logger
from reactor.runtime.scheduling import Delayed

__all__ = ["BatchConsumerActor", "Batching", "batch_key_function", "batch_outputs"]

BatchKey = Callable[[Event], Hashable]


@attrs.frozen(slots=True)
class Batching:
    """How a batch consumer gathers its events (see the module docstring).

    Attributes:
        size: most events in one batch.
        timeout: seconds a partial batch waits, from its first event, before it is handled.
        key: the batch key of an event; None: one batch at a time.
    """

    size: int
    timeout: float
    key: BatchKey | None = None

    def starter(self, runtime: ConsumerRuntime) -> Callable[[ActorContext], ReactorActor]:
        """What a supervisor calls to start an incarnation of this batch consumer."""

        def start(context: ActorContext) -> ReactorActor:
            return BatchConsumerActor.spawn(context, runtime, self)

        return start


def batch_key_function(key: str | BatchKey | None) -> BatchKey | None:
    """The batch key as a function of an event: ``key`` itself, or a field of dict data.

    An event whose data is not a mapping, or lacks the field, has the batch key None.
    """
    if key is None or callable(key):
        return key
    field = key

    def by_field(event: Event) -> Hashable:
        data = event.data
        return data.get(field) if isinstance(data, Mapping) else None

    return by_field


def batch_outputs(result: Any, consumer: str) -> list[Event | Delayed]:
    """The events a batch handler's return value (or ``BatchFailed.outputs``) stands for.

    Raises:
        ResultError: it is not None, an event, or an iterable of events (or
            :class:`~reactor.runtime.scheduling.Delayed` ones).
    """
    if result is None:
        return []
    if isinstance(result, Event | Delayed):
        return [result]
    if isinstance(result, Iterable) and not isinstance(result, str | bytes | Mapping | tuple):
        events = list(result)
        for item in events:
            if not isinstance(item, Event | Delayed):
                raise ResultError(_bad_result(consumer, item))
        return events
    if type(result) is tuple and all(isinstance(item, Event | Delayed) for item in result):
        return list(result)
    raise ResultError(_bad_result(consumer, result))


def _bad_result(consumer: str, value: Any) -> str:
    return (
        f"batch handler of consumer {consumer!r} returned {type(value).__name__} {value!r:.80}; "
        "return None, an Event, or an iterable of events (make each with "
        "event.derive(topic, data) from the event it follows)"
    )


@attrs.define(eq=False, slots=True)
class _Open:
    """A batch being gathered: parallel lists, as in :class:`Deliver`."""

    key: Hashable
    deadline: float  # clock time at which it is handled, full or not
    seqs: list[int] = attrs.field(factory=list)
    events: list[Event] = attrs.field(factory=list)
    attempts: list[int] = attrs.field(factory=list)


class BatchConsumerActor(ConsumerActor):
    """One incarnation of a batch consumer: gathers delivered events into batches.

    Delivered batches are taken apart as the base class does (held keys, decoding,
    dedup), but their events go into open batches, handled when full or due.
    """

    entry_point: ClassVar[str] = "handle_batch"
    call_unit: ClassVar[str] = "batches"

    def __init__(self, context: ActorContext, runtime: ConsumerRuntime, batching: Batching) -> None:
        super().__init__(context, runtime)
        self.batching = batching
        self.open: dict[Hashable, _Open] = {}  # by batch key, oldest first
        # event key -> batch key of the open batch holding it (kept with a batch key only).
        self.batch_of_key: dict[str, Hashable] = {}
        self.timer: object | None = None  # the token of the armed batch timer

    def on_receive(self, message: Any) -> Any:
        if type(message) is Tick and message.token is not None and message.token is self.timer:
            self.timer = None
            if self.paused is None:
                self._work()  # runs the batches that are due, and arms the next timer
            return None
        return super().on_receive(message)

    def _work(self) -> None:
        if self.open and not self._run_due():
            return
        super()._work()
        if self.actor_fenced:
            return
        if self.open:
            self.actor_counters.in_flight += sum(len(batch.seqs) for batch in self.open.values())
            self._arm()

    def _arm(self) -> None:
        """Arm the timer for the oldest open batch, unless it is armed."""
        if self.timer is not None:
            return
        clock = self.actor_clock
        oldest = next(iter(self.open.values()))
        token = self.timer = object()
        address = self.actor_address
        clock.call_later(
            max(0.0, oldest.deadline - clock.monotonic()), lambda: address.tell(Tick(token))
        )

    def _run_due(self) -> bool:
        """Handle every open batch whose timeout is over; False if the consumer pauses."""
        now = self.actor_clock.monotonic()
        opened = self.open
        while opened:
            oldest = next(iter(opened.values()))
            if oldest.deadline > now:
                break
            if not self._run(oldest):
                self._flush()
                return False
        self._flush()
        return True

    def _handle_items(self, batch: Deliver) -> bool:
        """Add ``batch``'s events from ``self.position`` to open batches, running full ones.

        Returns:
            False if it stopped part way (a pause, or a stop request).
        """
        if self.holds:
            self._expire_holds(batch)
        if (
            not self.holds
            and self.batching.key is None
            and self.runtime.dedup is None
            and self.runtime.upcasters is None
            and Encoded not in map(type, batch.events)
        ):
            done = self._gather_plain(batch)
        else:
            done = self._walk(batch)
        if self.released:
            # Given back at once: the channel lifts its hold on a key when the key's
            # retry falls due, and what this member still holds of it must be back by then.
            self._flush()
        return done

    def _gather_plain(self, batch: Deliver) -> bool:
        """:meth:`_walk` with no batch key, held key, dedup or upcaster, and nothing to decode.

        The usual case under load: slices of the delivery go into the open batch as
        they are, with no work per event.
        """
        size = self.batching.size
        seqs = batch.seqs
        index = self.position
        end = len(seqs)
        while index < end:
            if self.actor_stopping:
                self.position = index
                return False
            current = self.open.get(None) or self._open(None)
            take = min(size - len(current.seqs), end - index)
            current.seqs += seqs[index : index + take]
            current.events += batch.events[index : index + take]  # type: ignore[arg-type]
            current.attempts += batch.attempts[index : index + take]
            index += take
            if len(current.seqs) >= size:
                if not self._run(current):
                    self.position = index
                    return False
                if self.holds:  # it failed an event of a key: later ones of that key must wait
                    self.position = index
                    return self._walk(batch)
        self.position = index
        return True

    def _take(self, batch: Deliver, index: int, event: Event) -> bool:
        """Add ``event``, item ``index`` of ``batch``, to the open batch of its batch key.

        Returns:
            False if the consumer pauses or stops (a batch it ran failed, or a stop request).
        """
        key: Hashable = None
        batch_key = self.batching.key
        if batch_key is not None:
            try:
                key = batch_key(event)
                hash(key)
            except Exception as exc:
                self.position = index + 1
                return self._failed(batch.seqs[index], event, batch.attempts[index], exc)
            batch_of_key = self.batch_of_key
            owner = batch_of_key.get(event.key, key) if event.key is not None else key
            if owner != key:
                # Its key's earlier events go first. Then this event is looked at
                # again, from the top: that batch may have failed one of them.
                return self._run(self.open[owner])
            if event.key is not None:
                batch_of_key[event.key] = key
        current = self.open.get(key) or self._open(key)
        current.seqs.append(batch.seqs[index])
        current.events.append(event)
        current.attempts.append(batch.attempts[index])
        self.position = index + 1
        return len(current.seqs) < self.batching.size or self._run(current)

    def _open(self, key: Hashable) -> _Open:
        opened = self.open[key] = _Open(key, self.actor_clock.monotonic() + self.batching.timeout)
        return opened

    def _batch_succeeded(self, handled: int, now: float) -> None:
        """``handled`` events of a batch were handled: the consumer works."""
        runtime = self.runtime
        counters = self.actor_counters
        counters.handled += handled
        runtime.last_success = now
        if runtime.failures:
            runtime.failures = runtime.fresh_failures = 0
            counters.problem = None

    def _reopen(self, key: Hashable, items: list[tuple[int, Event, int]]) -> None:
        """Gather ``items`` (of a batch just handled, in order) again, into a new batch.

        No open batch has ``key`` (the one just handled had it), nor the event keys
        of ``items``, so they go first in the new batch, ahead of their keys' later events.
        """
        batch = self._open(key)
        keeps_keys = self.batching.key is not None
        for seq, event, attempt in items:
            batch.seqs.append(seq)
            batch.events.append(event)
            batch.attempts.append(attempt)
            if keeps_keys and event.key is not None:
                self.batch_of_key[event.key] = key

    # -- one batch -------------------------------------------------------------------

    def _run(self, batch: _Open) -> bool:
        """Handle one batch and settle it; False if the consumer pauses (or stops) now.

        Raises:
            ConsumerFailing: ``failure_threshold`` batches in a row failed (a consumer failure).
        """
        if self.actor_stopping:
            return False  # its events stay unacked; the next incarnation gets them back
        del self.open[batch.key]
        if self.batch_of_key:
            for event in batch.events:
                if event.key is not None and self.batch_of_key.get(event.key) == batch.key:
                    del self.batch_of_key[event.key]
        runtime = self.runtime
        handle: Any = self.handle
        events = batch.events
        failed: Mapping[str, BaseException | str] = {}

        def call(events: list[Event]) -> list[Event | Delayed]:
            nonlocal failed
            try:
                return batch_outputs(handle(events), runtime.name)
            except BatchFailed as exc:
                failed = exc.failed
                outputs = batch_outputs(exc.outputs, runtime.name)
                unknown = failed.keys() - {event.id for event in events}
                if unknown:
                    raise ResultError(
                        f"batch handler of consumer {runtime.name!r} raised BatchFailed for "
                        f"event id(s) not in its batch: {', '.join(sorted(unknown))[:200]}; "
                        "name the failed events of the batch by their event.id"
                    ) from exc
                return outputs

        ran = self._watched(batch.seqs[0], call, list(events))
        if ran is None:
            return False  # not a failure: the batch goes back to the channel unacked
        started, error = ran
        if error is not None:
            failed = dict.fromkeys([event.id for event in events], error)
        now = self.actor_clock.monotonic()
        counters = self.actor_counters
        counters.latency.record(now - started)
        counters.batches += 1
        return self._settle(batch, failed, now)

    def _outputs(self, event: Any, result: Any) -> Sequence[Event | Delayed]:
        """``result`` itself: the batch call returns the events to publish already."""
        outputs: Sequence[Event | Delayed] = result
        return outputs

    def _settle(self, batch: _Open, failed: Mapping[str, BaseException | str], now: float) -> bool:
        """Ack the handled events of a batch, nack the failed ones, release those that wait."""
        runtime = self.runtime
        counters = self.actor_counters
        dedup = runtime.dedup
        acks = self.acks
        if not failed:  # the usual case, with no work per event
            acks += batch.seqs
            if dedup is not None:
                for event in batch.events:
                    dedup.add(event.id)
            self._flush()
            self._batch_succeeded(len(batch.seqs), now)
            return True
        released = self.released
        # key -> whether its failed event is retried (else dead-lettered)
        failed_keys: dict[str, bool] = {}
        deferred: list[tuple[int, Event, int]] = []
        handled = retried = 0
        nacks: list[tuple[int, str | None, ErrorInfo, float]] = []
        first_error: tuple[ErrorInfo, BaseException | str] | None = None
        fresh = False
        infos: dict[tuple[int, bool], ErrorInfo] = {}
        for seq, event, attempt in zip(batch.seqs, batch.events, batch.attempts, strict=True):
            key = event.key
            if key is not None and key in failed_keys:
                # Behind a failed event of its key: not handled, whatever the handler did.
                if failed_keys[key]:
                    released.append(seq)  # back to the channel, to come after the retry
                else:
                    deferred.append((seq, event, attempt))  # its key is free again: at once
                continue
            reason = failed.get(event.id) if failed else None
            if reason is None:
                acks.append(seq)
                handled += 1
                if dedup is not None:
                    dedup.add(event.id)
                continue
            again = attempt < runtime.max_deliveries
            # The traceback goes into dead letters only, as for a single event's failure.
            info = infos.get((id(reason), again))
            if info is None:
                info = infos[(id(reason), again)] = _error_info(reason, traceback=not again)
            nacks.append((seq, key, info, runtime.retry_delay(attempt) if again else 0.0))
            retried += again
            fresh = fresh or attempt == 1
            if first_error is None:
                first_error = (info, reason)
            if key is not None:
                failed_keys[key] = again
        # The nacks go first: from a retry's nack on, the channel holds its key, so what
        # is released below waits behind the retry there.
        for seq, key, info, delay in nacks:
            self._nack(seq, info, delay=delay)
            if key is not None and failed_keys[key]:
                self.holds[key] = (seq, self.nacks)
        counters.event_failures += len(nacks)
        self._flush()
        if deferred:
            self._reopen(batch.key, deferred)
        if handled:
            self._batch_succeeded(handled, now)
        if first_error is None:
            return True
        info, reason = first_error
        logger.warning(
            "consumer %r: %d of the %d events of a batch failed (%s: %s); %d retried, %d dead-lettered",
            runtime.name,
            len(nacks),
            len(batch.seqs),
            info.type,
            info.message,
            retried,
            len(nacks) - retried,
            extra={"reactor_actor": runtime.member, "reactor_channel": runtime.channel},
        )
        if handled:
            return True  # the handler works: a few bad events, not a broken consumer
        cause = reason if isinstance(reason, Exception) else BatchFailed(failed)
        return self._failing(fresh, info, cause)


def _error_info(reason: BaseException | str, *, traceback: bool) -> ErrorInfo:
    if isinstance(reason, BaseException):
        return ErrorInfo.from_exception(reason, with_traceback=traceback)
    return ErrorInfo(BatchFailed.__qualname__, str(reason), "")
