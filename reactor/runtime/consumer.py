"""Consumers: actors that handle the events a channel delivers to their group.

A handler is a function ``handler(event)`` or an object with ``handle(event)``
and optional ``on_start()`` / ``on_stop()``. A class is instantiated afresh for
every incarnation, so a restart starts from clean state, as in OTP; an instance
is reused as it is.

A handler's return value publishes follow-up events, derived from the input
(same correlation id, causation id = the input's id), into the consumer's
``output`` channel (by default the channel it consumes from):

* ``None``: nothing;
* an :class:`~reactor.Event`;
* a ``(topic, data)`` pair;
* a :class:`~reactor.runtime.scheduling.Delayed` event, published later;
* an iterable of events and/or pairs (and/or delayed events).

Outputs are published *before* the input is acked, so a crash in between can
duplicate an output but never lose one.

Two kinds of failure are kept apart (DESIGN.md, "supervision"):

* **an event failed**: the handler raised for it (or returned something that is not
  an event). The consumer nacks it with a delay from its :class:`Retry` policy and
  goes on with its other events; the channel redelivers it once the delay is over
  (later events of its key wait behind it), and dead-letters it after
  ``max_deliveries`` attempts (at once if the handler raised
  :class:`~reactor.errors.Unretryable`). The consumer is not restarted and nothing
  counts toward restart intensity.
* **the consumer failed**: ``on_start`` raised, its handler hung past
  ``handler_timeout``, or ``failure_threshold`` events in a row failed their first
  delivery with no success between (raised as
  :class:`~reactor.errors.ConsumerFailing`, and again every ``failure_threshold``
  such failures while nothing succeeds). The supervisor restarts it; that restart
  counts toward restart intensity. Retries failing again do not count: a few
  poison events can fail many times in a row while the consumer is healthy.
  ``failure_threshold=1`` is OTP's "let it crash": every new event that fails
  restarts the consumer.

A consumer whose events fail on first delivery, one after another, with nothing
succeeding for a while (a dependency is down), backs off: from the third such
failure in a row, with no success for ``retry.min_s``, it pauses after each new
event that fails, on its retry curve, so it takes new events slowly and does not
burn them into dead letters at machine speed (retries keep their own per-event
delays). Its health says ``degraded`` meanwhile; the first success ends it.
Retries failing again do not pause it: a few poison events can fail many times
in a row while the consumer is healthy.

The handler can ask which attempt it is on, and why the previous one failed,
with :func:`current_delivery`; that, and how a return value becomes events
(:func:`as_events`), live in :mod:`reactor.runtime.handling` and are
re-exported here.

One concept, so one module despite its length: the consumer actor and the failure
rules it applies to each event. Batch handlers (:mod:`reactor.runtime.batching`) and
``async def`` handlers (:mod:`reactor.runtime.coroutines`) are subclasses of it,
each in its own module.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import attrs

from reactor.actors.address import Address
from reactor.actors.base import ActorContext, ReactorActor
from reactor.actors.counters import ActorCounters
from reactor.channels.dedup import DedupWindow
from reactor.channels.member import MemberLink
from reactor.errors import ConsumerFailing, DecodeError, ReactorError, Unretryable
from reactor.messages.control import Deliver, Encoded, ErrorInfo, Tick
from reactor.messages.event import FAILURE_CHANNEL, FAILURE_TOPIC, REPLY_TO, Event
from reactor.messages.upcasting import Upcasters, read
from reactor.runtime.handling import Delivery, as_events, current_delivery, handling
from reactor.runtime.router import Router
from reactor.runtime.scheduling import Delayed
from reactor.supervision.strategy import Retry

if TYPE_CHECKING:
    import pykka

__all__ = [
    "ConsumerActor",
    "ConsumerRuntime",
    "Delivery",
    "as_events",
    "current_delivery",
]

logger = logging.getLogger("reactor")

_JOIN_TIMEOUT_S = 10.0
# From this many failures in a row the consumer pauses before its next attempt.
_PAUSE_FROM = 3
# Handled events are acked in runs of at most this many, or this many seconds after
# the first of a run was handled: a process that dies charges an attempt only to what
# was in its handler, not to a whole batch it had finished.
_ACK_RUN = 32
_ACK_WITHIN_S = 0.01
# The jitter of every unseeded consumer: one generator, its calls atomic under the GIL.
_UNSEEDED = random.Random()


@attrs.define(eq=False)
class ConsumerRuntime:
    """What every incarnation of one consumer (or pool member) shares.

    The failures in a row (with no success between) are kept here, across
    incarnations, so a restart does not reset the consumer's pause: only a success
    does. Only events failing their *first* delivery say the consumer is broken:
    the retries of a few poison events can fail many times in a row while the
    consumer is healthy, and must not pause it.
    """

    name: str
    member: str
    group: str
    channel: str
    channel_address: Address
    output: str
    handler: Any
    router: Router
    prefetch: int
    dedup: DedupWindow | None
    counters: ActorCounters
    max_deliveries: int = 5
    retry: Retry = attrs.field(factory=Retry)
    failure_threshold: int = 10
    concurrency: int = 1  # events an ``async def`` handler may run at once
    handler_timeout: float | None = None  # an ``async def`` handler is cancelled past it
    # The channel's upcasters: events of older versions are upcast before the handler.
    upcasters: Upcasters | None = None
    # The incarnation's class: ConsumerActor, or one for coroutine handlers.
    actor: type[ConsumerActor] | None = None
    # Seeds this consumer's retry jitter (None: unseeded). The generator is made at the
    # first retry: a Random holds 2.5 KiB of state, and most consumers never retry.
    seed: str | None = None
    _rng: random.Random | None = attrs.field(default=None, init=False)
    failures: int = 0  # failed attempts in a row, retries included
    fresh_failures: int = 0  # of those, first attempts: the sign the consumer is broken
    last_success: float | None = None  # clock time of the last handled event
    last_error: ErrorInfo | None = None
    link: MemberLink = attrs.field(init=False)  # how it talks to its channel

    @link.default
    def _link(self) -> MemberLink:
        return MemberLink(self.channel_address, self.group, self.member)

    def start(self, context: ActorContext) -> ReactorActor:
        return (self.actor or ConsumerActor).spawn(context, self)

    def retry_delay(self, attempt: int) -> float:
        """How long the retry of an event whose ``attempt``-th delivery failed waits."""
        rng = self._rng
        if rng is None:
            rng = self._rng = random.Random(self.seed) if self.seed is not None else _UNSEEDED
        return self.retry.delay(attempt, rng)

    def failing(self) -> str | None:
        """Why this consumer is degraded (it fails event after event), or None."""
        if self.fresh_failures < _PAUSE_FROM or self.last_error is None:
            return None
        error = self.last_error
        return (
            f"failed its last {self.failures} attempts in a row "
            f"({error.type}: {error.message:.80}); pausing between attempts"
        )

    def abandon(self, current: tuple[int, int, float]) -> None:
        """Settle the event a hung incarnation was stuck on: a failed attempt."""
        epoch, seq, _ = current
        error = ErrorInfo(
            "HandlerTimeout", f"handler of consumer {self.name!r} did not return in time", ""
        )
        self.link.nack(epoch, seq, error, self.name, delay=self.retry.min_s)

    def leave(self) -> None:
        """Hand back everything this member holds; used when it is removed for good."""
        self.link.leave()


def _instantiate(handler: Any) -> Any:
    if inspect.isclass(handler):
        return handler()
    return handler


class ConsumerActor(ReactorActor):
    """One incarnation of a consumer: joins its group, handles batches, acks.

    Batches wait in ``pending`` and are handled in order, ``position`` being the next
    item of the first one. A pause (failures in a row) leaves the rest there until a
    :class:`Tick` resumes; the actor stays responsive to stop requests meanwhile.
    """

    # The method of a handler object this actor calls (a batch consumer's is handle_batch),
    # and what one call of it handles, as failure messages name it.
    entry_point: ClassVar[str] = "handle"
    call_unit: ClassVar[str] = "events"

    def __init__(self, context: ActorContext, runtime: ConsumerRuntime) -> None:
        super().__init__(context)
        self.runtime = runtime
        self.epoch = 0
        self.joining: pykka.Future[int] | None = None  # the join's answer, until taken
        self.target: Any = None
        self.handle: Callable[[Event], Any] | None = None
        self.pending: deque[Deliver] = deque()
        self.position = 0
        self.paused: object | None = None  # the token of the Tick that ends the pause
        self.nacks = 0  # nacks sent by this incarnation (see Deliver.nacks)
        # key -> (seq that failed, this incarnation's nack count after it): batches the
        # channel made before it took that nack may hold later events of the key.
        self.holds: dict[str, tuple[int, int]] = {}
        self.acks: list[int] = []
        self.acks_since = 0.0
        self.released: list[int] = []

    def on_start(self) -> None:
        runtime = self.runtime
        target = _instantiate(runtime.handler)
        self.target = target
        handle = getattr(target, self.entry_point, None)
        self.handle = handle if callable(handle) else target
        on_start = getattr(target, "on_start", None)
        if callable(on_start) and handle is not None:
            self.run_hook(on_start)
        # The join is sent, not waited for: the channel answers before it delivers
        # anything to this incarnation, and the first message it handles takes the
        # answer (see _joined). Waiting here would cost every start two thread
        # handoffs, and a supervisor starts its children one after the other.
        self.joining = runtime.link.join(self.actor_address, runtime.prefetch)

    def _joined(self) -> None:
        """Take the channel's answer to this incarnation's join: its epoch.

        Raises:
            pykka.Timeout: the channel did not answer within ``_JOIN_TIMEOUT_S``.
            UnknownGroupError: the channel has no such group.
        """
        joining, self.joining = self.joining, None
        assert joining is not None
        self.epoch = joining.get(timeout=_JOIN_TIMEOUT_S)

    def on_stop(self) -> None:
        self._flush()
        on_stop = getattr(self.target, "on_stop", None)
        if callable(on_stop) and getattr(self.target, self.entry_point, None) is not None:
            self.run_hook(on_stop)

    def run_hook(self, hook: Callable[[], Any]) -> None:
        """Call the handler's ``on_start`` or ``on_stop``."""
        hook()

    def on_receive(self, message: Any) -> Any:
        if self.joining is not None:
            self._joined()
        kind = type(message)
        if kind is Deliver:
            if message.epoch == self.epoch:
                self.actor_counters.received += len(message)
                self.pending.append(message)
                if self.paused is None:
                    self._work()
            # else: sent to an earlier incarnation; the channel took those events back
            return None
        if kind is Tick:
            if message.token is not None and message.token is self.paused:
                self.paused = None
                self._work()
            return None
        return super().on_receive(message)

    def _work(self) -> None:
        """Handle pending batches until none is left, a pause begins, or stop is requested."""
        counters = self.actor_counters
        pending = self.pending
        # Counted once here and then kept: a recount of every pending batch before each
        # batch was quadratic in a deep mailbox.
        queued = sum(len(batch) for batch in pending)
        try:
            while pending:
                counters.in_flight = queued - self.position
                if not self._handle_items(pending[0]):
                    return
                queued -= len(pending.popleft())
                self.position = 0
        finally:
            if not self.actor_fenced:  # the counters belong to the next incarnation now
                self._flush()
                if not pending:
                    counters.in_flight = 0

    def _handle_items(self, batch: Deliver) -> bool:
        """Handle ``batch`` from ``self.position``; False if it stopped part way."""
        if self.holds:
            self._expire_holds(batch)
        return self._walk(batch)

    def _walk(self, batch: Deliver) -> bool:
        """Admit ``batch``'s items in order from ``self.position``, taking each event.

        :meth:`_take` moves ``position`` past what it took (a batch consumer's may leave
        it, to look at the item again) and says whether to go on.

        Returns:
            False if it stopped part way (a pause, or a stop request).
        """
        admit = self._admit
        take = self._take
        seqs = batch.seqs
        items = batch.events
        end = len(seqs)
        while (index := self.position) < end:
            if self.actor_stopping:
                return False  # the rest stay with the channel and go to the next incarnation
            event = admit(seqs[index], items[index])
            if event is None:
                self.position = index + 1
            elif not take(batch, index, event):
                return False
        return True

    def _take(self, batch: Deliver, index: int, event: Event) -> bool:
        """Handle ``event``, item ``index`` of ``batch``; False if the consumer pauses or stops."""
        seq = batch.seqs[index]
        handle = self.handle
        assert handle is not None
        handling.current = (self.runtime, batch, index)
        try:
            ran = self._watched(seq, handle, event)
        finally:
            handling.current = None
        if ran is None:
            return False  # not a failure: the event goes back to the channel unacked
        started, error = ran
        self.position = index + 1
        if error is not None:
            return self._failed(seq, event, batch.attempts[index], error)
        self._succeeded(seq, event, batch.attempts[index], started)
        return True

    def _outputs(self, event: Event, result: Any) -> Sequence[Event | Delayed]:
        """The events to publish for what the handler returned for ``event`` (not None)."""
        return as_events(event, result, self.runtime.name)

    def _watched(
        self, seq: int, call: Callable[[Any], Any], arg: Any
    ) -> tuple[float, Exception | None] | None:
        """Make the handler call ``call(arg)`` under the watchdog, then publish its outputs.

        What the call returns, unless None, becomes the events to publish through
        :meth:`_outputs` (a batch consumer's call returns them ready).

        ``seq`` is what the supervisor's watchdog finds the actor working on (a batch's
        first). The outputs are published before anything is acked, and not at all by
        an incarnation abandoned meanwhile.

        Returns:
            None if a stop request cut the publish short (not a failure: what the call
            took goes back to the channel unacked); else when the call started, on the
            actor's clock, and what it raised (None: it returned).

        Raises:
            _Abandoned: the incarnation was abandoned while the call ran.
        """
        counters = self.actor_counters
        # One clock read before and one after each handler call: the watchdog's start
        # time and the latency both come from the actor's clock.
        started = self.actor_clock.monotonic()
        mine = counters.current = (self.epoch, seq, started)
        error: Exception | None = None
        try:
            result = call(arg)
            if result is not None and not self.actor_fenced:
                outputs = self._outputs(arg, result)
                if outputs:
                    self._publish(outputs)
        except _Stopping:
            _clear(counters, mine)
            return None
        except Exception as exc:
            if self.actor_fenced:
                raise  # abandoned: the supervisor already settled what it was stuck on
            error = exc
        if self.actor_fenced:
            # Abandoned while it ran: what it held was given back and a new incarnation
            # owns the counters; this late result must change nothing.
            raise _Abandoned
        if counters.current is mine:  # (what _clear does, without the call: per event)
            counters.current = None
        return started, error

    def _admit(self, seq: int, item: Event | Encoded) -> Event | None:
        """The event ``seq`` stands for, to handle; None if it is settled without a handler.

        It is given back if it must wait for the retry of its key's failure, dead-lettered
        at once if its bytes are no event or an upcaster fails on it, acked if this group
        handled its id before. An event of an older version is upcast (see
        :mod:`reactor.messages.upcasting`).
        """
        holds = self.holds
        if holds and item.key in holds and holds[item.key][0] != seq:
            self.released.append(seq)
            return None
        upcasters = self.runtime.upcasters
        if type(item) is Encoded or upcasters is not None:
            try:
                event = read(item, upcasters)
            except DecodeError as exc:
                # No retry can decode (or upcast) it: the channel dead-letters it as stored.
                self._nack(seq, ErrorInfo.from_exception(exc), final=True)
                return None
        else:
            event = item  # type: ignore[assignment]
        dedup = self.runtime.dedup
        if dedup is not None and event.id in dedup:
            self.acks.append(seq)
            return None
        return event

    def _succeeded(self, seq: int, event: Event, attempt: int, started: float) -> None:
        """The handler returned for ``event``: count it, remember it, ack it (in runs)."""
        runtime = self.runtime
        counters = self.actor_counters
        now = self.actor_clock.monotonic()
        counters.latency.record(now - started)
        counters.handled += 1
        runtime.last_success = now
        if runtime.failures:
            runtime.failures = runtime.fresh_failures = 0
            counters.problem = None
        if runtime.dedup is not None:
            runtime.dedup.add(event.id)
        acks = self.acks
        if not acks:
            self.acks_since = now
        acks.append(seq)
        if (
            len(acks) >= _ACK_RUN
            or now - self.acks_since >= _ACK_WITHIN_S
            # A redelivery at once: after a crash the channel charges the event it
            # delivered first, and its ack is what shows it was not what crashed.
            or attempt > 1
        ):
            self._flush()

    def _expire_holds(self, batch: Deliver) -> None:
        """Drop the key holds ``batch`` no longer needs: the channel made it after their nack."""
        holds = self.holds
        for key in [k for k, (_, n) in holds.items() if n <= batch.nacks]:
            del holds[key]

    def _failed(self, seq: int, event: Event, attempt: int, exc: Exception) -> bool:
        """An event failed: nack it for a later retry; False if the consumer pauses now.

        Raises:
            ConsumerFailing: ``failure_threshold`` failures in a row (a consumer failure).
        """
        runtime = self.runtime
        if isinstance(exc, Unretryable):
            return self._unretryable(seq, event, exc)
        retried = attempt < runtime.max_deliveries
        # The traceback goes into the dead letter; a failure that is retried keeps its
        # type and message only (formatting a traceback costs more than the rest).
        error = ErrorInfo.from_exception(exc, with_traceback=not retried)
        self.actor_counters.event_failures += 1
        delay = runtime.retry_delay(attempt) if retried else 0.0
        logger.warning(
            "consumer %r: event %s (%s) failed on attempt %d of %d: %s: %s; %s",
            runtime.name,
            event.id,
            event.topic,
            attempt,
            runtime.max_deliveries,
            error.type,
            error.message,
            f"retried in {delay:.2f}s" if retried else "dead-lettered",
            extra={
                "reactor_actor": runtime.member,
                "reactor_channel": runtime.channel,
                "reactor_event_id": event.id,
            },
        )
        self._nack(seq, error, delay=delay)
        if not retried:
            self._answer_failure(event, error)
        elif event.key is not None:
            self.holds[event.key] = (seq, self.nacks)
        return self._failing(attempt == 1, error, exc)

    def _answer_failure(self, event: Event, error: ErrorInfo) -> None:
        """``event`` is dead-lettered: answer its sender, if it waits for one (a saga's command).

        The answer is ``event.derive`` of topic :data:`FAILURE_TOPIC` on the channel
        :data:`FAILURE_CHANNEL` (both from the event's headers), so a saga's step
        fails on a participant that gave up on its command instead of waiting out a
        timeout it may not have.
        """
        headers = event.headers
        topic = headers.get(FAILURE_TOPIC)
        if topic is None or self.actor_fenced:
            return
        channel = headers.get(FAILURE_CHANNEL, self.runtime.channel)
        answer = event.derive(
            topic, {"error": f"{error.type}: {error.message}", "dead_lettered": True}
        )
        try:
            # Never waits: the answer may go to the channel this consumer drains.
            self.runtime.router.publish(channel, (answer,), timeout=None, overdraft=True)
        except ReactorError as exc:
            logger.warning(
                "consumer %r: could not answer the dead-lettered event %s on %r: %s",
                self.runtime.name,
                event.id,
                channel,
                exc,
            )

    def _unretryable(self, seq: int, event: Event, exc: Unretryable) -> bool:
        """The handler said no retry can handle ``event``: dead-letter it now, go on.

        Not counted toward ``failure_threshold``: the event is bad, not the consumer.
        """
        runtime = self.runtime
        error = ErrorInfo.from_exception(exc)
        self.actor_counters.event_failures += 1
        logger.warning(
            "consumer %r: event %s (%s) cannot succeed on any retry: %s: %s; dead-lettered",
            runtime.name,
            event.id,
            event.topic,
            error.type,
            error.message,
            extra={
                "reactor_actor": runtime.member,
                "reactor_channel": runtime.channel,
                "reactor_event_id": event.id,
            },
        )
        self._nack(seq, error, final=True)
        self._answer_failure(event, error)
        return True

    def _failing(self, first: bool, error: ErrorInfo, exc: Exception) -> bool:
        """Count a failed handler call toward the consumer's health; False if it pauses now.

        ``first``: the call failed an event on its first delivery (only those say
        the consumer itself is broken).

        Raises:
            ConsumerFailing: ``failure_threshold`` failures in a row (a consumer failure).
        """
        runtime = self.runtime
        runtime.failures += 1
        if first:
            runtime.fresh_failures += 1
        runtime.last_error = error
        counters = self.actor_counters
        fresh = runtime.fresh_failures
        # Only new events failing say the consumer is broken: retries of a few poison
        # events can fail many times in a row while everything else succeeds.
        if first and fresh % runtime.failure_threshold == 0:
            self._flush()  # what it finished stays finished: no redelivery after the restart
            raise ConsumerFailing(
                f"consumer {runtime.name!r} failed {fresh} new {self.call_unit} in a row with no success "
                f"between (last: {error.type}: {error.message:.200}); restarting it. Fix what "
                "its handler depends on, or raise failure_threshold if such runs are expected"
            ) from exc
        last_success = runtime.last_success
        now = self.actor_clock.monotonic()
        if (
            not first  # a retry: its own delay paces it
            or fresh < _PAUSE_FROM
            or (last_success is not None and now - last_success < runtime.retry.min_s)
        ):
            return True  # events around it succeed: a few bad events, not a broken consumer
        counters.problem = runtime.failing()
        token = self.paused = object()
        address = self.actor_address
        self.actor_clock.call_later(
            runtime.retry_delay(fresh - _PAUSE_FROM + 1), lambda: address.tell(Tick(token))
        )
        return False

    def _nack(self, seq: int, error: ErrorInfo, *, final: bool = False, delay: float = 0.0) -> None:
        self.nacks += 1
        self.runtime.link.nack(self.epoch, seq, error, self.runtime.name, final=final, delay=delay)

    def _flush(self) -> None:
        """Send the acks and releases gathered so far."""
        link = self.runtime.link
        if self.acks:
            link.ack(self.epoch, tuple(self.acks))
            self.acks.clear()  # in place: the handling loop holds the list
        if self.released:
            link.release(self.epoch, tuple(self.released))
            self.released.clear()

    def _publish(self, outputs: Sequence[Event | Delayed]) -> None:
        runtime = self.runtime
        router = runtime.router
        # Events only, unless some output is Delayed (checked just below).
        events = cast("Sequence[Event]", outputs)
        later: list[tuple[Event, float]] = []
        if Delayed in map(type, outputs):
            events = []
            for output in outputs:
                due = output.due(router.clock) if isinstance(output, Delayed) else None
                if due is None:  # an event, or a delayed one due already
                    events.append(output.event if isinstance(output, Delayed) else output)
                else:
                    later.append((output.event, due))  # type: ignore[union-attr]
        if any(REPLY_TO in event.headers for event in events):
            # Replies go back to their requester, not into the output channel.
            for reply in [event for event in events if REPLY_TO in event.headers]:
                router.reply(runtime.channel, reply)
            events = [event for event in events if REPLY_TO not in event.headers]
        # Waiting for room in the channel we consume from would wait on ourselves.
        overdraft = runtime.output == runtime.channel
        if events:
            sent = router.publish(
                runtime.output,
                events,
                timeout=None,
                overdraft=overdraft,
                cancelled=lambda: self.actor_stopping,
            )
            if sent < len(events) and self.actor_stopping:
                raise _Stopping
        for event, due in later:
            # Never waits for room in a full (memory) scheduled area: that fails the event,
            # which is retried later, rather than hold up the consumer and its stop.
            router.schedule(runtime.output, (event,), due=due, timeout=0)


def _clear(counters: ActorCounters, mine: tuple[int, int, float]) -> None:
    # Compare-and-clear: never wipe what a newer incarnation has set meanwhile.
    if counters.current is mine:
        counters.current = None


class _Stopping(Exception):
    """Stop was requested while a handler's outputs waited for capacity."""


class _Abandoned(Exception):
    """A fenced incarnation's handler returned late: it ends, changing nothing."""
