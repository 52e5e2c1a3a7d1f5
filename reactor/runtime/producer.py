"""Producers: actors that turn a source into events on a channel.

* An iterable or generator is pulled in batches, as fast as the channel's
  capacity allows (a full channel slows the producer: backpressure). When it is
  exhausted the producer finishes, and the system knows.
* A callable with ``interval=`` is polled every ``interval`` seconds; it returns
  ``None`` (nothing now), an :class:`~reactor.Event`, or the data of one event.

``rate=`` caps either kind at that many events per second (a token bucket on the
system clock). An item that is already an :class:`~reactor.Event` is published as
it is; anything else becomes the data of a new event on the producer's topic.

An event bigger than the channel's ``max_event_size`` is dropped, logged and
reported (``$system.event.dropped``, policy ``max_event_size``); the producer goes
on with the next.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from reactor.actors.base import ActorContext, ReactorActor
from reactor.errors import EventTooLargeError
from reactor.messages import lifecycle
from reactor.messages.control import Tick
from reactor.messages.event import Event
from reactor.runtime.router import Router

__all__ = ["ProducerActor", "ProducerRuntime"]

logger = logging.getLogger("reactor")

_PULL = "pull"
# How often a paused iterable producer looks whether it was resumed.
_PAUSED_CHECK_S = 0.05


@attrs.define(eq=False)
class ProducerRuntime:
    """What every incarnation of one producer shares: the source and its position."""

    name: str
    channel: str
    topic: str
    router: Router
    iterator: Iterator[Any] | None = None
    poll: Callable[[], Any] | None = None
    interval: float | None = None
    rate: float | None = None
    key: Callable[[Any], str | None] | None = None
    batch_size: int = 128
    # Pulled from the source but not yet in the channel (a stop came first).
    backlog: deque[Event] = attrs.field(factory=deque)
    finished: threading.Event = attrs.field(factory=threading.Event)
    on_finished: Callable[[], None] | None = None
    published: int = 0
    # Set from other threads (reactor.runtime.controls); read by the producer actor.
    paused: bool = False
    burst: int = 0  # events to publish at once, past the rate (a presenter's flood)

    @property
    def finite(self) -> bool:
        return self.iterator is not None

    def start(self, context: ActorContext) -> ReactorActor:
        return ProducerActor.spawn(context, self)

    def make_event(self, item: Any) -> Event:
        if item.__class__ is Event or isinstance(item, Event):
            return item
        if self.key is None:
            return Event.create(self.topic, item, source=self.name)
        return Event.create(self.topic, item, key=self.key(item), source=self.name)


class ProducerActor(ReactorActor):
    """One incarnation of a producer; it schedules its own pulls as messages."""

    def __init__(self, context: ActorContext, runtime: ProducerRuntime) -> None:
        super().__init__(context)
        self.runtime = runtime
        self.tokens = 0.0
        self.refilled_at = 0.0

    def on_start(self) -> None:
        self.refilled_at = self.actor_clock.monotonic()
        self.tokens = min(self.runtime.rate or 0.0, 1.0) if self.runtime.rate else 0.0
        if self.runtime.finished.is_set():
            return
        if self.runtime.poll is not None:
            self._schedule(self.runtime.interval or 0.0)
        else:
            self.actor_address.tell(Tick(self._token))

    @property
    def _token(self) -> tuple[str, int]:
        # Timers outlive an incarnation; a restarted producer ignores its predecessor's.
        return (_PULL, self.actor_incarnation)

    def on_receive(self, message: Any) -> Any:
        if type(message) is Tick:
            if message.token != self._token:
                return None
            if self.runtime.poll is not None:
                self._poll()
            else:
                self._pull()
            return None
        return super().on_receive(message)

    # -- sources -----------------------------------------------------------------------

    def _pull(self) -> None:
        runtime = self.runtime
        allowed = self._allowance(runtime.batch_size)
        if allowed == 0:
            return
        backlog = runtime.backlog
        assert runtime.iterator is not None
        exhausted = False
        while len(backlog) < allowed:
            try:
                item = next(runtime.iterator)
            except StopIteration:
                exhausted = True
                break
            backlog.append(runtime.make_event(item))
        self._flush()
        if self._actor_stop_requested:
            return
        if exhausted and not backlog:
            self._finish()
        else:
            self.actor_address.tell(Tick(self._token))

    def _poll(self) -> None:
        runtime = self.runtime
        assert runtime.poll is not None
        count = self._allowance(1)
        for _ in range(count):
            item = runtime.poll()
            if item is not None:
                runtime.backlog.append(runtime.make_event(item))
        if count:
            self._flush()
        self._schedule(runtime.interval or 0.0)

    def _flush(self) -> None:
        runtime = self.runtime
        backlog = runtime.backlog
        if not backlog:
            return
        events = list(backlog)
        try:
            sent = runtime.router.publish(
                runtime.channel, events, timeout=None, cancelled=lambda: self._actor_stop_requested
            )
        except EventTooLargeError as refused:
            # One event is too big: it is dropped (and reported), the rest go on.
            self._drop(refused)
            self._flush()
            return
        if sent == len(backlog):
            backlog.clear()
        else:
            for _ in range(sent):
                backlog.popleft()
        runtime.published += sent
        self.actor_counters.handled += sent

    def _drop(self, refused: EventTooLargeError) -> None:
        """Drop the event ``refused`` names from the backlog: log it, report it on ``$system``.

        Retrying could not make it smaller, and failing the producer would crash it
        on the same event again and again. The report names the event, not its data.
        """
        runtime = self.runtime
        backlog = runtime.backlog
        victim = next(event for event in backlog if event.id == refused.event_id)
        backlog.remove(victim)
        logger.warning(
            "producer %r: dropped an event: %s",
            runtime.name,
            refused,
            extra={"reactor_actor": runtime.name, "reactor_event_id": victim.id},
        )
        runtime.router.publish_system(
            lifecycle.dropped(victim, channel=runtime.channel, policy="max_event_size")
        )

    def _finish(self) -> None:
        runtime = self.runtime
        runtime.finished.set()
        if runtime.on_finished is not None:
            runtime.on_finished()
        # A normal exit: the producer is transient, so it is not restarted.
        self.request_stop()

    # -- rate limit --------------------------------------------------------------------

    def _allowance(self, wanted: int) -> int:
        """How many events may go now; schedules the next pull when it is 0."""
        runtime = self.runtime
        if runtime.paused:
            if runtime.poll is None:
                self._schedule(_PAUSED_CHECK_S)
            return 0
        if runtime.burst > 0:
            burst, runtime.burst = runtime.burst, 0
            return max(wanted, burst)
        rate = runtime.rate
        if rate is None:
            return wanted
        now = self.actor_clock.monotonic()
        self.tokens = min(max(rate, 1.0), self.tokens + (now - self.refilled_at) * rate)
        self.refilled_at = now
        allowed = min(wanted, int(self.tokens))
        if allowed == 0:
            if self.runtime.poll is None:
                self._schedule((1.0 - self.tokens) / rate)
            return 0
        self.tokens -= allowed
        return allowed

    def _schedule(self, delay: float) -> None:
        address, tick = self.actor_address, Tick(self._token)
        self.actor_clock.call_later(delay, lambda: address.tell(tick))
