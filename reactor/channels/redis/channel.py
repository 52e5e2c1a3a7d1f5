"""The handle of a ``redis`` channel and the backend that opens it."""

from __future__ import annotations

import threading
from typing import Any

from reactor.actors.base import ActorContext, ReactorActor
from reactor.channels.actor import GroupChannelActor
from reactor.channels.backend import (
    Channel,
    ChannelConfig,
    ChannelMetrics,
    ChannelParts,
    ChannelServices,
)
from reactor.channels.groups import channel_stats
from reactor.channels.redis.client import (
    FIELD,
    entry,
    is_connection_error,
    require_redis_py,
)
from reactor.channels.redis.dedup import RedisDedupWindow
from reactor.channels.redis.link import RedisLink
from reactor.channels.redis.log import RedisLog
from reactor.channels.redis.monitor import Monitor, Writes
from reactor.channels.redis.options import RedisOptions, parse_url
from reactor.errors import BackpressureTimeout, DecodeError
from reactor.messages import lifecycle
from reactor.messages.codecs import CloudEventsCodec
from reactor.messages.event import Event

__all__ = ["RedisBackend", "RedisChannel"]


class RedisChannel:
    """Handle of one channel on a Redis stream.

    Thread-safety: ``send``, ``stats`` and ``problems`` may be called from any thread.
    """

    def __init__(
        self, config: ChannelConfig, services: ChannelServices, options: RedisOptions
    ) -> None:
        parts = ChannelParts.open(config, services)
        self.name = config.name
        self.config = config
        self.options = options
        self.gate = parts.gate
        self.address = parts.address
        self.codec = CloudEventsCodec()
        self.link = RedisLink(parts, options)
        self.client = self.link.client
        self.writes = Writes()
        self.lags: dict[str, int] = {}
        self.monitor = Monitor(self.link, self.writes, self.lags)
        self.log = RedisLog(self.link, self.monitor, self.address)
        try:
            self.link.ensure_groups()
        except Exception as exc:
            self.link.guard(exc)
        self.monitor.start()

    # -- Channel protocol ------------------------------------------------------------

    def start_actor(self, context: ActorContext) -> ReactorActor:
        return GroupChannelActor.spawn(context, self.log, self.config.max_batch)

    def send(self, events: tuple[Event, ...]) -> None:
        """XADD ``events`` in one pipeline; returns once Redis has them.

        Raises:
            TypeError: an event's data is not plain JSON (CloudEvents needs it).
            BackpressureTimeout: Redis stayed unreachable for ``publish_timeout``.
        """
        gate = self.gate
        writes = self.writes
        writes.begin()
        try:
            encode = self.codec.encode
            entries = [entry(encode(event), event.topic, event.key) for event in events]
            groups = list(self.log.groups.values())
            unrouted = sum(1 for event in events if not any(g.matches(event.topic) for g in groups))
            self._write(entries)
            with self.log.lock:
                self.log.counters.published += len(events)
                self.log.counters.unrouted += unrouted
        finally:
            writes.end(len(events))
        if unrouted:
            gate.release(unrouted)  # nobody here reads them: settled on arrival
        if gate.overflow == "drop_oldest" and gate.over_capacity:
            # Read the backlog afresh first: the monitor's count may hold these
            # events twice for a moment, and evicting on it would drop too many.
            try:
                self.monitor.sync()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
            if gate.over_capacity:
                self._evict_oldest(gate.over_capacity)
        self.monitor.wake()

    def _write(self, entries: list[dict[bytes, bytes]]) -> None:
        options = self.options
        link = self.link
        clock = link.clock
        trim: dict[str, Any] = {}
        if options.maxlen is not None:
            trim = {"maxlen": options.maxlen, "approximate": options.approximate}
        deadline = clock.monotonic() + options.publish_timeout_s
        attempt = 0
        while True:
            try:
                link.ensure_groups()
                if options.maxage_s is not None:
                    minid = f"{int((clock.wall() - options.maxage_s) * 1000)}-0"
                    trim = {"minid": minid, "approximate": options.approximate}
                self.client.add(entries, trim)
                if attempt:
                    link.found()
                return
            except Exception as exc:
                link.guard(exc)
                attempt += 1
                pause = link.backoff(attempt)
                if clock.monotonic() + pause > deadline or link.stopping.is_set():
                    raise BackpressureTimeout(
                        f"channel {self.name!r} could not write to Redis at {options.display} for "
                        f"{options.publish_timeout_s}s ({type(exc).__name__}: {exc}); the events "
                        "were not published"
                    ) from exc
                link.stopping.wait(pause)

    def _evict_oldest(self, excess: int) -> None:
        try:
            victims = self.client.evict(excess, [spec.name for spec in self.config.groups])
        except Exception as exc:
            self.link.guard(exc)
            return
        for _entry_id, fields in victims:
            event = self._decode_quietly(fields)
            if event is not None:
                self.link.publish_system(
                    lifecycle.dropped(event, channel=self.name, policy="drop_oldest")
                )
        with self.log.lock:
            self.log.counters.dropped += len(victims)
        self.gate.release(len(victims))

    def _decode_quietly(self, fields: dict[bytes, bytes]) -> Event | None:
        try:
            return self.codec.decode(fields[FIELD])
        except (KeyError, DecodeError):
            return None

    def stats(self) -> ChannelMetrics:
        lags = self.lags
        groups = tuple(
            g.stats(backlog=lags.get(g.name, 0) + g.queued(), expired=g.trimmed)
            for g in list(self.log.groups.values())
        )
        return channel_stats(self.name, "redis", self.gate, self.log.counters, groups)

    def problems(self) -> tuple[str, ...]:
        """What is wrong with the channel right now, for health reports."""
        return self.link.problems()

    def dedup_window(self, group: str, size: int) -> RedisDedupWindow:
        """The dedup window of ``group``, shared through Redis with every worker."""
        window = RedisDedupWindow(self.link, group, size)
        self.log.dedup[group] = window  # never dead-letter what it holds
        return window

    @property
    def trimmed(self) -> int:
        """Pending entries found deleted by retention (``maxlen``/``maxage``)."""
        return self.log.counters.expired

    def close(self) -> None:
        """Stop the monitor and readers and close the connections."""
        self.link.stopping.set()
        self.monitor.wake()
        threads: list[threading.Thread] = [self.monitor, *self.log.close()]
        wait = self.options.block_ms / 1000 + 3.0
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(wait)
        self.client.close()


class RedisBackend:
    """Opens ``redis://`` (or ``rediss://``) channels."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme

    def open(self, config: ChannelConfig, services: ChannelServices) -> Channel:
        """Open the channel: parse its URL, create its stream and groups.

        Raises:
            RedisUnavailable: redis-py is not installed.
            TopologyError: a bad option in the URL.
        """
        options = parse_url(config.backend, config.name)
        require_redis_py(config.name, options.display)
        return RedisChannel(config, services, options)
