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
* an iterable of events and/or pairs.

Outputs are published *before* the input is acked, so a crash in between can
duplicate an output but never lose one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from reactor.actors.address import Address
from reactor.actors.base import ActorContext, ReactorActor
from reactor.actors.counters import ActorCounters
from reactor.channels.dedup import DedupWindow
from reactor.errors import DecodeError
from reactor.messages.control import Ack, Deliver, Encoded, ErrorInfo, Join, Leave, Nack
from reactor.messages.event import Event
from reactor.runtime.router import Router

__all__ = ["ConsumerActor", "ConsumerRuntime", "ResultError", "as_events"]

_JOIN_TIMEOUT_S = 10.0


class ResultError(TypeError):
    """A handler returned something that is not an event, a pair, or an iterable of them."""


def as_events(parent: Event, result: Any, consumer: str) -> list[Event]:
    """The follow-up events a handler's return value stands for."""
    if result is None:
        return []
    if isinstance(result, Event):
        return [result]
    if _is_pair(result):
        return [parent.derive(result[0], result[1])]
    if isinstance(result, Iterable) and not isinstance(result, str | bytes | dict):
        events = []
        for item in result:
            if isinstance(item, Event):
                events.append(item)
            elif _is_pair(item):
                events.append(parent.derive(item[0], item[1]))
            else:
                raise ResultError(_bad_result(consumer, item))
        return events
    raise ResultError(_bad_result(consumer, result))


def _is_pair(value: Any) -> bool:
    return type(value) is tuple and len(value) == 2 and isinstance(value[0], str)


def _bad_result(consumer: str, value: Any) -> str:
    return (
        f"consumer {consumer!r} returned {type(value).__name__} {value!r:.80}; return None, an "
        "Event, a (topic, data) pair, or an iterable of events and pairs"
    )


@attrs.define(eq=False)
class ConsumerRuntime:
    """What every incarnation of one consumer (or pool member) shares."""

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

    def start(self, context: ActorContext) -> ReactorActor:
        return ConsumerActor.spawn(context, self)

    def abandon(self, current: tuple[int, int, float]) -> None:
        """Settle the event a hung incarnation was stuck on: a failed attempt."""
        epoch, seq, _ = current
        error = ErrorInfo(
            "HandlerTimeout", f"handler of consumer {self.name!r} did not return in time", ""
        )
        self.channel_address.tell(Nack(self.group, self.member, epoch, seq, error, self.name))

    def leave(self) -> None:
        """Hand back everything this member holds; used when it is removed for good."""
        self.channel_address.tell(Leave(self.group, self.member, 0))


def _instantiate(handler: Any) -> Any:
    if inspect.isclass(handler):
        return handler()
    return handler


class ConsumerActor(ReactorActor):
    """One incarnation of a consumer: joins its group, handles batches, acks."""

    def __init__(self, context: ActorContext, runtime: ConsumerRuntime) -> None:
        super().__init__(context)
        self.runtime = runtime
        self.epoch = 0
        self.target: Any = None
        self.handle: Callable[[Event], Any] | None = None

    def on_start(self) -> None:
        runtime = self.runtime
        target = _instantiate(runtime.handler)
        self.target = target
        handle = getattr(target, "handle", None)
        self.handle = handle if callable(handle) else target
        on_start = getattr(target, "on_start", None)
        if callable(on_start) and handle is not None:
            on_start()
        self.epoch = runtime.channel_address.ask(
            Join(runtime.group, runtime.member, self.actor_address, runtime.prefetch),
            timeout=_JOIN_TIMEOUT_S,
        )

    def on_stop(self) -> None:
        on_stop = getattr(self.target, "on_stop", None)
        if callable(on_stop) and getattr(self.target, "handle", None) is not None:
            on_stop()

    def on_receive(self, message: Any) -> Any:
        if type(message) is Deliver:
            if message.epoch == self.epoch:
                self._handle_batch(message)
            # else: sent to an earlier incarnation; the channel took those events back
            return None
        return super().on_receive(message)

    def _handle_batch(self, batch: Deliver) -> None:
        counters = self.actor_counters
        counters.received += len(batch)
        counters.in_flight = len(batch)
        try:
            self._handle_items(batch, self.epoch)
        finally:
            if not self.actor_fenced:  # the counters belong to the next incarnation now
                counters.in_flight = 0

    def _handle_items(self, batch: Deliver, epoch: int) -> None:
        runtime = self.runtime
        counters = self.actor_counters
        latency = counters.latency
        dedup = runtime.dedup
        handle = self.handle
        assert handle is not None
        # One clock read before and one after each handler call: the watchdog's start
        # time and the latency both come from the actor's clock.
        monotonic = self.actor_clock.monotonic
        record = latency.record
        acked: list[int] = []
        for seq, item in zip(batch.seqs, batch.events, strict=True):
            if self._actor_stop_requested:
                break  # the rest stay with the channel and go to the next incarnation
            if isinstance(item, Encoded):
                try:
                    event = item.decode()
                except DecodeError as exc:
                    # No retry can decode it: the channel dead-letters it with its bytes.
                    runtime.channel_address.tell(
                        Nack(
                            runtime.group,
                            runtime.member,
                            epoch,
                            seq,
                            ErrorInfo.from_exception(exc),
                            runtime.name,
                            final=True,
                        )
                    )
                    continue
            else:
                event = item
            if dedup is not None and event.id in dedup:
                acked.append(seq)
                continue
            started = monotonic()
            mine = counters.current = (epoch, seq, started)
            try:
                result = handle(event)
                outputs = as_events(event, result, runtime.name) if result is not None else ()
                if outputs and not self.actor_fenced:
                    self._publish(outputs)
            except _Stopping:
                _clear(counters, mine)
                break  # not a failure: the event goes back to the channel unacked
            except BaseException as exc:
                if self.actor_fenced:
                    return  # abandoned: the supervisor already settled this event
                _clear(counters, mine)
                self._settle(acked)
                error = ErrorInfo.from_exception(exc)
                runtime.channel_address.tell(
                    Nack(runtime.group, runtime.member, epoch, seq, error, runtime.name)
                )
                raise
            if self.actor_fenced:
                # Abandoned while it ran: the event was given back and a new incarnation
                # owns the counters; this late result must change nothing.
                return
            if counters.current is mine:  # (what _clear does, without the call)
                counters.current = None
            record(monotonic() - started)
            counters.handled += 1
            if dedup is not None:
                dedup.add(event.id)
            acked.append(seq)
        self._settle(acked)

    def _settle(self, seqs: list[int]) -> None:
        if seqs:
            runtime = self.runtime
            runtime.channel_address.tell(
                Ack(runtime.group, runtime.member, self.epoch, tuple(seqs))
            )

    def _publish(self, events: list[Event]) -> None:
        runtime = self.runtime
        # Waiting for room in the channel we consume from would wait on ourselves.
        overdraft = runtime.output == runtime.channel
        sent = runtime.router.publish(
            runtime.output,
            events,
            timeout=None,
            overdraft=overdraft,
            cancelled=lambda: self._actor_stop_requested,
        )
        if sent < len(events) and self._actor_stop_requested:
            raise _Stopping


def _clear(counters: ActorCounters, mine: tuple[int, int, float]) -> None:
    # Compare-and-clear: never wipe what a newer incarnation has set meanwhile.
    if counters.current is mine:
        counters.current = None


class _Stopping(Exception):
    """Stop was requested while a handler's outputs waited for capacity."""
