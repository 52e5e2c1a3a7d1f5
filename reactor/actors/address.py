"""Stable addresses: a name and a mailbox that outlive any one incarnation.

A supervisor restarts a child by starting a fresh actor on the *same* mailbox,
so senders keep one :class:`Address` for the child's whole life, never see
``ActorDeadError`` while it restarts, and nothing queued is lost.
"""

from __future__ import annotations

import queue
from typing import Any

import pykka

from reactor.actors.pykka_compat import Envelope

__all__ = ["Address"]


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

    def depth(self) -> int:
        """Messages waiting in the mailbox (approximate while others send)."""
        return self.inbox.qsize()

    def __repr__(self) -> str:
        return f"<Address {self.name}>"
