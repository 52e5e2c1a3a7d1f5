"""Stable addresses: a name and a mailbox that outlive any one incarnation.

A supervisor restarts a child by starting a fresh actor on the *same* mailbox,
so senders keep one :class:`Address` for the child's whole life, never see
``ActorDeadError`` while it restarts, and nothing queued is lost.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any, TypeVar

import pykka

from reactor.actors.pykka_compat import Envelope

__all__ = ["Address", "Answer"]

T = TypeVar("T")


class Answer(pykka.Future[T]):
    """A future for one reply, set once: a lock where pykka's has a Condition.

    pykka's :class:`~pykka.ThreadingFuture` costs about 1 KiB (a Condition and its
    waiter deque); this one a lock. It matters where a future is held for long by
    many actors: each consumer holds its join's answer until its first message.

    Thread-safety: any thread may ``get``; one thread sets it, once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._done = threading.Lock()
        self._done.acquire()  # released by set(): getters wait on it
        self._value: Any = None
        self._exc_info: Any = None
        self._set = False

    def get(self, *, timeout: float | None = None) -> T:
        if not self._set:
            if not self._done.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
                raise pykka.Timeout(f"{timeout} seconds")
            self._done.release()  # let every other getter through too
        if self._exc_info is not None:
            _, exc, tb = self._exc_info
            raise exc.with_traceback(tb)
        value: T = self._value
        return value

    def set(self, value: Any | None = None) -> None:
        if self._set:
            raise queue.Full
        self._value = value
        self._set = True
        self._done.release()

    def set_exception(self, exc_info: Any = None) -> None:
        if self._set:
            raise queue.Full
        self._exc_info = exc_info if exc_info is not None else sys.exc_info()
        self._set = True
        self._done.release()


class Address:
    """Where to send messages for one named actor, across its restarts.

    The mailbox is a :class:`queue.SimpleQueue`: it is implemented in C and costs a
    tenth of pykka's default :class:`queue.Queue` per message. Memory is bounded
    by credit-based demand upstream, not by blocking here.

    Thread-safety: ``tell`` and ``ask`` may be called from any thread.
    """

    __slots__ = ("inbox", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.inbox: queue.SimpleQueue[Envelope[Any]] = queue.SimpleQueue()

    def tell(self, message: Any) -> None:
        """Queue ``message`` for the actor; never blocks."""
        self.inbox.put(Envelope(message))

    def ask(self, message: Any, timeout: float | None = None) -> Any:
        """Queue ``message`` and wait for the reply.

        Raises:
            pykka.Timeout: no reply within ``timeout`` seconds.
            Exception: whatever the actor raised while handling ``message``.
        """
        return self.ask_future(message).get(timeout=timeout)

    def ask_future(self, message: Any) -> pykka.Future[Any]:
        """Queue ``message``; the returned future holds the reply."""
        future: pykka.Future[Any] = pykka.ThreadingFuture()
        self.inbox.put(Envelope(message, reply_to=future))
        return future

    def ask_answer(self, message: Any) -> Answer[Any]:
        """Queue ``message``; the returned :class:`Answer` holds the reply.

        As :meth:`ask_future`, with a future a tenth of the size: for a reply the
        asker holds a long time before it reads it.
        """
        answer: Answer[Any] = Answer()
        self.inbox.put(Envelope(message, reply_to=answer))
        return answer

    def depth(self) -> int:
        """Messages waiting in the mailbox (approximate while others send)."""
        return self.inbox.qsize()

    def __repr__(self) -> str:
        return f"<Address {self.name}>"
