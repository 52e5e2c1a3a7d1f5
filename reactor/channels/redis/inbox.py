"""The reply inbox of one process on a redis channel: request-reply across processes.

A system that sends requests over a redis channel reads its own inbox stream,
``{prefix}:inbox:{inbox}``, on a thread (:class:`Inbox`), and hands every reply to
the requests waiting in that system. Consumers in any process write replies there
(:meth:`RedisClient.send_reply`). Read replies are deleted; the stream is deleted
when the channel closes, and expires an hour after its last reply if the process
died instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from reactor.actors.base import THREAD_PREFIX
from reactor.channels.redis.client import FIELD, RedisClient, is_connection_error
from reactor.errors import DecodeError
from reactor.messages.codecs import CloudEventsCodec
from reactor.messages.event import Event

__all__ = ["Inbox"]

logger = logging.getLogger("reactor")

_BLOCK_MS = 200
_RETRY_S = 0.5


class Inbox(threading.Thread):
    """Reads one inbox stream until :meth:`stop`, handing each reply to ``deliver``."""

    def __init__(
        self,
        channel: str,
        client: RedisClient,
        inbox: str,
        deliver: Callable[[Event], object],
    ) -> None:
        super().__init__(name=f"{THREAD_PREFIX}{channel}:inbox", daemon=True)
        self.channel = channel
        self.client = client
        self.inbox = inbox
        self.deliver = deliver
        self.codec = CloudEventsCodec()
        self.stopping = threading.Event()

    def run(self) -> None:
        after: bytes | str = "0-0"  # the stream is this process's own: all of it is ours
        while not self.stopping.is_set():
            try:
                replies = self.client.read_replies(self.inbox, after, _BLOCK_MS)
            except Exception as exc:
                if not is_connection_error(exc):
                    logger.exception("channel %r: reading replies failed", self.channel)
                self.stopping.wait(_RETRY_S)  # the channel's health reports the outage
                continue
            for entry_id, fields in replies:
                after = entry_id
                try:
                    reply = self.codec.decode(fields[FIELD])
                except (KeyError, DecodeError) as exc:
                    logger.warning(
                        "channel %r: an unreadable reply was dropped: %s", self.channel, exc
                    )
                    continue
                self.deliver(reply)
            if replies:
                try:
                    self.client.drop_replies(self.inbox, [entry_id for entry_id, _ in replies])
                except Exception as exc:
                    if not is_connection_error(exc):
                        raise

    def stop(self) -> None:
        """Stop reading (within one block) and delete the inbox stream."""
        self.stopping.set()
        self.join(_BLOCK_MS / 1000 + 5.0)
        try:
            self.client.close_inbox(self.inbox)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
