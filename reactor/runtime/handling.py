"""What a handler sees of its delivery, and what its return value stands for.

:func:`current_delivery` tells a running handler which attempt it is on and why
the previous one failed; :func:`as_events` turns what a handler returns into the
follow-up events its consumer publishes. The consumer actor that calls handlers
is :mod:`reactor.runtime.consumer`.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from reactor.errors import NotInHandlerError, ResultError
from reactor.messages.control import Deliver, ErrorInfo
from reactor.messages.event import Event
from reactor.runtime.scheduling import Delayed

if TYPE_CHECKING:
    from reactor.runtime.consumer import ConsumerRuntime

__all__ = ["Delivery", "as_events", "current_delivery", "handling", "handling_task", "is_async"]


@attrs.frozen(slots=True)
class Delivery:
    """The delivery a handler is working on: see :func:`current_delivery`.

    Attributes:
        consumer: the consumer (or pool member) handling it.
        group: its consumer group.
        channel: the channel it came from.
        attempt: 1 for the first delivery, 2 for the first retry, and so on.
        max_deliveries: after this many failed attempts it is dead-lettered.
        previous_error: why the previous attempt failed: its type and message (None
            on the first attempt, or when the previous one was lost with a process
            rather than raised). Its ``traceback`` is empty: only the dead letter
            carries one, of the last attempt.
        position: where the event is in its channel: the offset in a ``sqlite``
            log, the entry id's sequence number on ``redis`` (both rise with the log
            and survive restarts), a number rising with each publish in ``memory``
            (this process only). A projection checkpoints it.
    """

    consumer: str
    group: str
    channel: str
    attempt: int
    max_deliveries: int
    previous_error: ErrorInfo | None
    position: int = 0

    @property
    def last_attempt(self) -> bool:
        """Whether a failure now dead-letters the event."""
        return self.attempt >= self.max_deliveries


# Set by the consumer around each handler call, to ``(runtime, batch, index)``, and back
# to None after it: a thread-local, since each consumer's handler runs in its own thread.
handling = threading.local()
# The same for a coroutine handler: many run on one event loop thread, each in its task.
handling_task: contextvars.ContextVar[tuple[ConsumerRuntime, Deliver, int] | None] = (
    contextvars.ContextVar("reactor_handling", default=None)
)


def is_async(handler: Any) -> bool:
    """Whether ``handler`` (a function, a class or an object with ``handle``) is a coroutine."""
    handle = getattr(handler, "handle", None)
    if callable(handle):
        return inspect.iscoroutinefunction(handle)
    if inspect.isclass(handler):
        return False
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004  (an object whose __call__ is async)
    )


def current_delivery() -> Delivery:
    """The delivery the calling handler is handling: its attempt and previous error.

    Call it from a handler (or from code the handler calls, in its thread or, for an
    ``async def`` handler, in its task)::

        def charge(event):
            if current_delivery().attempt > 1:
                log.info("retrying %s after %s", event.id, current_delivery().previous_error)

    Raises:
        NotInHandlerError: not called from a consumer's handler.
    """
    current: tuple[ConsumerRuntime, Deliver, int] | None = getattr(handling, "current", None)
    if current is None:
        current = handling_task.get()
    if current is None:
        raise NotInHandlerError(
            "reactor.current_delivery() was called outside a consumer's handler; call it "
            "from the handler, or from code the handler calls in its own thread (a batch "
            "handler's events have no single delivery: it has none)"
        )
    runtime, batch, index = current
    failures = batch.failures
    return Delivery(
        consumer=runtime.name,
        group=runtime.group,
        channel=runtime.channel,
        attempt=batch.attempts[index],
        max_deliveries=runtime.max_deliveries,
        previous_error=failures.get(batch.seqs[index]) if failures else None,
        position=batch.seqs[index],
    )


def as_events(parent: Event, result: Any, consumer: str) -> list[Event | Delayed]:
    """The follow-up events a handler's return value stands for (some maybe :class:`Delayed`)."""
    if result is None:
        return []
    if isinstance(result, Event | Delayed):
        return [result]
    if _is_pair(result):
        return [parent.derive(result[0], result[1])]
    if isinstance(result, Iterable) and not isinstance(result, str | bytes | dict):
        events: list[Event | Delayed] = []
        for item in result:
            if isinstance(item, Event | Delayed):
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
