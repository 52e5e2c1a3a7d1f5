"""The reader threads of a redis channel: blocking reads, never more than granted.

One thread per group that has local members (``reactor:redis:{channel}:{group}``)
runs ``XREADGROUP ... BLOCK`` for at most ``block_ms``, and only for as many
entries as the channel actor has granted it, then tells the actor what it got
(:class:`Fetched`). On its first read a worker re-reads its own pending entries
(from id ``0``); every ``lease/2`` seconds it claims the entries of dead workers
(``XAUTOCLAIM``). An entry reactor wrote goes to its member still encoded; the
reader decodes the others, and an entry that is not a CloudEvent comes back as
an :class:`Item` with no event, to be dead-lettered.

Thread-safety: :meth:`Reader.grant` and :meth:`Reader.stop` may be called from
any thread; the rest runs on the reader's own thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, NamedTuple

import attrs

from reactor.actors.address import Address
from reactor.actors.base import THREAD_PREFIX
from reactor.channels.redis.client import (
    FIELD,
    GROUP_FIELD,
    KEY_FIELD,
    TOPIC_FIELD,
    entry_seq,
    is_connection_error,
    is_missing_group,
)
from reactor.channels.redis.link import RedisLink
from reactor.errors import DecodeError
from reactor.messages.codecs import CloudEventsCodec
from reactor.messages.control import Encoded
from reactor.messages.event import Event

__all__ = ["Fetched", "Item", "Reader"]

logger = logging.getLogger("reactor")


class Item(NamedTuple):
    """One entry a reader took from Redis for a group (a named tuple: one per entry).

    ``event`` is None when the entry is no event (``raw`` and ``error`` say why).
    ``again``: the entry was delivered before (re-read or claimed), not read new.
    ``only`` names the one group a redriven entry is for.
    """

    seq: int
    event: Event | Encoded | None
    topic: str
    attempt: int
    raw: bytes | None = None
    error: str | None = None
    again: bool = False
    only: str | None = None


@attrs.frozen(slots=True)
class Fetched:
    """What a reader got for ``group``: entries, and pending ids found trimmed."""

    group: str
    items: tuple[Item, ...]
    trimmed: tuple[int, ...] = ()


class Reader(threading.Thread):
    """Blocking reads for one group, never more than the actor granted."""

    def __init__(
        self, link: RedisLink, group: str, actor: Address, codec: CloudEventsCodec
    ) -> None:
        super().__init__(name=f"{THREAD_PREFIX}redis:{link.name}:{group}", daemon=True)
        self.link = link
        self.group = group
        self.actor = actor
        self.codec = codec
        self.budget = 0
        self.cond = threading.Condition()
        self.stopped = False
        self.pending_done = False  # this worker's own pending entries were read back
        self.claim_cursor = "0-0"
        self.pending_cursor = "0"
        self.next_claim = 0.0
        self.charge_claim = True  # the next entry claimed is the first of its pass

    def grant(self, count: int) -> None:
        with self.cond:
            self.budget += count
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def run(self) -> None:
        link = self.link
        attempt = 0
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.stopped or self.budget > 0)
                if self.stopped:
                    return
                want = min(self.budget, link.config.max_batch)
            try:
                fetched = self._fetch(want)
            except Exception as exc:
                if is_missing_group(exc) and "NOGROUP" in str(exc):
                    link.recreate_groups()
                elif is_connection_error(exc):
                    link.lost(exc)
                else:
                    logger.exception("channel %r group %r: read failed", link.name, self.group)
                attempt += 1
                with self.cond:
                    self.cond.wait_for(lambda: self.stopped, link.backoff(attempt))
                continue
            if attempt:
                attempt = 0
                link.found()
            if fetched is not None and (fetched.items or fetched.trimmed):
                with self.cond:
                    self.budget -= len(fetched.items)
                self.actor.tell(fetched)

    def _fetch(self, want: int) -> Fetched | None:
        link = self.link
        client = link.client
        if not self.pending_done:
            # A worker restarted under the same name first takes back what it held.
            entries = client.read(self.group, self.pending_cursor, want)
            if not entries:
                self.pending_done = True
                return None
            first_page = self.pending_cursor == "0"
            self.pending_cursor = entries[-1][0].decode()
            live = [(i, f) for i, f in entries if f]
            trimmed = tuple(entry_seq(i) for i, f in entries if not f)
            return self._build(live, trimmed, fresh=False, charge=first_page)
        now = link.clock.monotonic()
        if now >= self.next_claim:
            self.next_claim = now + link.options.lease_s / 2
            if self.claim_cursor == "0-0":
                self.charge_claim = True  # a new pass over the group's pending entries
            self.claim_cursor, claimed, deleted = client.claim(self.group, self.claim_cursor, want)
            if claimed or deleted:
                charge = self.charge_claim and bool(claimed)
                if charge:
                    self.charge_claim = False
                return self._build(
                    claimed, tuple(entry_seq(i) for i in deleted), fresh=False, charge=charge
                )
        fresh = client.read(self.group, ">", want, link.options.block_ms)
        if not fresh:
            return None
        return self._build(fresh, (), fresh=True)

    def _build(
        self, entries: list[Any], trimmed: tuple[int, ...], *, fresh: bool, charge: bool = False
    ) -> Fetched:
        """The entries as :class:`Item`\\ s; ``charge``: the first one is charged a lost delivery."""
        previous: dict[int, int] = {}
        if entries and not fresh:
            ids = [i for i, _ in entries]
            previous = self.link.client.attempts(self.group, ids, ids[0] if charge else None)
        codec = self.codec
        again = not fresh
        new = tuple.__new__
        items = []
        for entry_id, fields in entries:
            seq = entry_seq(entry_id)
            raw = fields.get(FIELD) if isinstance(fields, dict) else None
            attempt = previous.get(seq, 1)
            if raw is None:
                names = (
                    ", ".join(sorted(k.decode(errors="replace") for k in fields))
                    if fields
                    else "none"
                )
                items.append(
                    Item(
                        seq,
                        None,
                        "",
                        attempt,
                        repr(fields).encode(),
                        f"entry has no 'event' field (fields: {names})",
                        again,
                    )
                )
                continue
            topic = fields.get(TOPIC_FIELD)
            if topic is not None:  # written by reactor: its consumer decodes it
                key = fields.get(KEY_FIELD)
                try:
                    text = topic.decode()
                    key_text = None if key is None else key.decode()
                    only = fields.get(GROUP_FIELD)
                    only_text = None if only is None else only.decode()
                except UnicodeDecodeError:
                    # A field no one can read: the entry is dead-lettered with its bytes,
                    # and the entries read with it go on.
                    items.append(Item(seq, None, "", attempt, raw, _unreadable(fields), again))
                    continue
                # tuple.__new__: the named tuples' own constructors are Python functions.
                stored = new(Encoded, (key_text, raw, codec))
                items.append(new(Item, (seq, stored, text, attempt, None, None, again, only_text)))
                continue
            try:
                event = codec.decode(raw)
            except DecodeError as exc:
                items.append(Item(seq, None, "", attempt, raw, str(exc), again))
            else:
                items.append(Item(seq, event, event.topic, attempt, again=again))
        return Fetched(self.group, tuple(items), trimmed)


def _unreadable(fields: dict[bytes, bytes]) -> str:
    """What is wrong with an entry whose reactor fields are not UTF-8."""
    bad = []
    for name in (TOPIC_FIELD, KEY_FIELD):
        value = fields.get(name)
        if value is None:
            continue
        try:
            value.decode()
        except UnicodeDecodeError:
            bad.append(f"{name.decode()}={value!r:.80}")
    return f"entry field(s) not UTF-8: {', '.join(bad)}; its 'event' field is kept as raw bytes"
