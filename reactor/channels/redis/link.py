"""A redis channel's link to Redis: the client, its groups, outages and backoff.

The publishers, the reader threads, the monitor and the channel actor all talk
to Redis through one :class:`RedisLink`. It creates the stream and the groups,
notices when Redis is lost (closing the channel's gate and publishing
``$system.channel.disconnected``) and found again (``$system.channel.reconnected``),
and says how long to wait before a retry.

Thread-safety: every method may be called from any thread.
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
from typing import Any

from reactor.channels.backend import ChannelParts, GroupSpec
from reactor.channels.redis.client import RedisClient, is_connection_error
from reactor.channels.redis.options import RedisOptions
from reactor.errors import TopologyError
from reactor.messages import lifecycle
from reactor.supervision.strategy import Backoff

__all__ = ["RETRY", "RedisLink"]

logger = logging.getLogger("reactor")

# Retries against Redis: 50 ms, doubling up to 2 s, each spread by +-25%.
RETRY = Backoff(min_s=0.05, max_s=2.0, multiplier=2.0, jitter=0.25)


class RedisLink:
    """What every part of one redis channel shares about Redis.

    Args:
        parts: the channel's config, services (clock, random numbers, ``$system``)
            and gate (suspended while Redis is unreachable).
        options: its parsed URL.
    """

    def __init__(self, parts: ChannelParts, options: RedisOptions) -> None:
        config = self.config = parts.config
        services = parts.services
        self.name = config.name
        self.options = options
        self.clock = services.clock
        self.publish_system = services.publish_system
        self.gate = parts.gate
        self.client = RedisClient(config.name, options)
        self.stopping = threading.Event()
        self._rng: random.Random = services.rng
        self._rng_lock = threading.Lock()  # random.Random is not documented thread-safe
        self._groups_ready = False
        self._groups_lock = threading.Lock()
        self._outage_since: float | None = None
        self._outage_lock = threading.Lock()

    # -- groups ----------------------------------------------------------------------

    def start_id(self, spec: GroupSpec) -> str:
        """Where a new consumer group begins: the URL's ``start``, else the consumer's.

        Raises:
            TopologyError: the consumer's ``start`` is an offset (stream ids are not offsets).
        """
        if self.options.start is not None:
            return self.options.start
        start = spec.start
        if start == "earliest":
            return "0"
        if start == "latest":
            return "$"
        if isinstance(start, datetime.datetime):
            return f"{int(start.timestamp() * 1000)}-0"
        raise TopologyError(
            f"channel {self.name!r}: group {spec.name!r} has start={start!r}; a redis "
            "channel starts a group at 'earliest', 'latest' or a datetime (stream ids are not offsets)"
        )

    def ensure_groups(self, *, force: bool = False) -> None:
        """Create the stream and every group of the topology that does not exist yet."""
        with self._groups_lock:
            if self._groups_ready and not force:
                return
            self.client.create_groups(
                (spec.name, self.start_id(spec)) for spec in self.config.groups
            )
            self._groups_ready = True

    def recreate_groups(self) -> None:
        """The stream or a group vanished (Redis restarted without data): create them again."""
        try:
            self.ensure_groups(force=True)
        except Exception as exc:
            logger.debug("channel %r: %s", self.name, exc)

    # -- outages -----------------------------------------------------------------------

    def lost(self, exc: BaseException) -> None:
        """Note that Redis is unreachable; the first call of an outage reports it."""
        with self._outage_lock:
            first = self._outage_since is None
            if first:
                self._outage_since = self.clock.monotonic()
        reason = f"{type(exc).__name__}: {exc}"
        self.gate.suspend(f"cannot reach Redis at {self.options.display} ({reason})")
        if first:
            logger.warning(
                "channel %r lost Redis at %s: %s", self.name, self.options.display, reason
            )
            self.system(lifecycle.CHANNEL_DISCONNECTED, error=reason)

    def found(self) -> None:
        """Redis answered: end the outage, if there was one."""
        with self._outage_lock:
            since = self._outage_since
            self._outage_since = None
        if since is None:
            return
        self.gate.suspend(None)
        downtime = self.clock.monotonic() - since
        logger.warning("channel %r reconnected to Redis after %.1fs", self.name, downtime)
        self.system(lifecycle.CHANNEL_RECONNECTED, downtime_s=round(downtime, 3))

    def guard(self, exc: Exception) -> None:
        """Handle ``exc`` from a call to Redis: an outage is noted, anything else re-raised."""
        if not is_connection_error(exc):
            raise exc
        self.lost(exc)

    def problems(self) -> tuple[str, ...]:
        """What is wrong with the channel right now, for health reports."""
        down = self.gate.suspended
        if down is None:
            return ()
        return (f"channel {self.name!r} {down}",)

    def system(self, topic: str, **data: Any) -> None:
        """Publish a ``$system`` event about this channel."""
        self.publish_system(
            lifecycle.channel_event(topic, self.name, url=self.options.display, **data)
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (from 1): exponential, jittered."""
        with self._rng_lock:
            # Backoff counts restarts, whose first is immediate: retry 1 is its second.
            return RETRY.delay(attempt + 1, self._rng)
