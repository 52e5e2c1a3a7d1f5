"""Requests waiting for their reply: request-reply over channels.

:meth:`System.request` publishes an event whose ``reactor-reply-to`` header names
this system's inbox, and waits on a future kept here by the request's id. A
consumer's handler answers by returning ``event.reply(data)``; the consumer sends
that reply back (:meth:`Router.reply`): into this table directly when the requester
is in the same system, or through the channel's broker to the requester's inbox
(``redis``), whose reader puts it here.

A reply that comes after its request gave up (timed out or was cancelled) finds no
future: it is dropped and counted (:attr:`Replies.late`), never kept.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import Future

from reactor.errors import RequestTimeout
from reactor.messages.event import Event

__all__ = ["Replies", "ReplyFuture", "no_reply"]


class ReplyFuture(Future[Event]):
    """The future reply to ``request``: cancel it to stop waiting."""

    def __init__(self, request: Event) -> None:
        super().__init__()
        self.request = request


class Replies:
    """The requests of one system still waiting, by request id.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self) -> None:
        # Unique across processes: the redis inbox of this system is named by it.
        self.inbox = uuid.uuid4().hex
        self.late = 0  # replies that found no request waiting
        self._waiting: dict[str, Future[Event]] = {}
        self._lock = threading.Lock()

    def expect(self, request: Event) -> ReplyFuture:
        """A future of the reply to ``request``; cancel it to stop waiting."""
        future = ReplyFuture(request)
        with self._lock:
            self._waiting[request.id] = future
        future.add_done_callback(lambda _: self._forget(request.id, future))
        return future

    def deliver(self, reply: Event) -> bool:
        """Hand ``reply`` to the request it answers; False (and counted late) if none waits."""
        request_id = reply.causation_id
        with self._lock:
            future = self._waiting.pop(request_id, None) if request_id is not None else None
            if future is None:
                self.late += 1
                return False
        if not future.set_running_or_notify_cancel():
            with self._lock:
                self.late += 1  # cancelled just now: the requester gave up first
            return False
        future.set_result(reply)
        return True

    def waiting(self) -> int:
        """How many requests wait for their reply."""
        with self._lock:
            return len(self._waiting)

    def _forget(self, request_id: str, future: Future[Event]) -> None:
        with self._lock:
            if self._waiting.get(request_id) is future:
                del self._waiting[request_id]


def no_reply(request: Event, channel: str, timeout: float) -> RequestTimeout:
    """The error of a request that got no reply within ``timeout`` seconds."""
    return RequestTimeout(
        f"no reply to request {request.id} ({request.topic!r} on channel {channel!r}) within "
        f"{timeout}s; a consumer of {channel!r} answers by returning event.reply(data)"
    )
