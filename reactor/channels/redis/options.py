"""Options of a ``redis://`` channel URL: what reactor reads, what redis-py gets.

A channel URL is a redis-py URL (``redis://[[user]:password@]host[:port][/db]``,
``rediss://`` for TLS, redis-py's own query options such as ``ssl_cert_reqs``)
plus these reactor options in its query string, which are removed before the
URL reaches redis-py:

==================  ========  =================================================
option              default   meaning
==================  ========  =================================================
``prefix``          reactor   keys are ``{prefix}:{channel}`` (the stream) and
                              ``{prefix}:{channel}:attempts:{group}``
``worker``          see below the worker part of every Redis consumer name
``lease``           30        seconds an entry may stay idle in a dead worker's
                              pending list before another worker claims it
``block_ms``        100       longest blocking read; bounds how long a stop waits
``maxlen``          none      retention: ``XADD MAXLEN`` (exact unless ``approx=1``)
``maxage``          none      retention in seconds: ``XADD MINID`` of now - maxage
``approx``          0         ``1`` trims with ``~`` (cheaper, keeps a little more)
``start``           none      where every *new* group starts: ``$`` (new events
                              only) or ``0`` (what the stream retains); without
                              it each group follows its consumer's ``start=``
``publish_timeout`` 30        seconds a publish retries while Redis is unreachable
==================  ========  =================================================

The worker part defaults to ``$REACTOR_WORKER`` if set, else ``{hostname}-{pid}``.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from reactor.channels.options import bad_option
from reactor.errors import TopologyError

__all__ = ["RedisOptions", "parse_url"]

_REACTOR_KEYS = frozenset(
    {
        "prefix",
        "worker",
        "lease",
        "block_ms",
        "maxlen",
        "maxage",
        "approx",
        "start",
        "publish_timeout",
    }
)


@attrs.frozen(slots=True)
class RedisOptions:
    """A parsed channel URL.

    Attributes:
        client_url: the URL for ``redis.Redis.from_url`` (reactor options removed).
        display: the URL without its password, for messages and events.
        prefix: key prefix.
        worker: worker part of consumer names.
        lease_s: idle time after which a dead worker's entries are claimed.
        block_ms: longest blocking read, in milliseconds.
        maxlen: ``MAXLEN`` for ``XADD``, or None.
        maxage_s: retention by age for ``XADD MINID``, or None.
        approximate: trim with ``~``.
        start: start id of every newly created group, overriding the consumers'
            ``start=`` (None: each group starts where its consumer says).
        publish_timeout_s: how long ``send`` retries during an outage.
    """

    client_url: str
    display: str
    prefix: str = "reactor"
    worker: str = ""
    lease_s: float = 30.0
    block_ms: int = 100
    maxlen: int | None = None
    maxage_s: float | None = None
    approximate: bool = False
    start: str | None = None
    publish_timeout_s: float = 30.0


def _default_worker() -> str:
    return os.environ.get("REACTOR_WORKER") or f"{socket.gethostname()}-{os.getpid()}"


def parse_url(url: str, channel: str) -> RedisOptions:
    """Split ``url`` into reactor's options and redis-py's URL.

    Args:
        url: the channel's ``backend`` URL.
        channel: the channel's name, for error messages.

    Returns:
        The options.

    Raises:
        TopologyError: an option has a bad value; the message names the channel and option.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise TopologyError(f"channel {channel!r}: {url!r} is not a redis:// or rediss:// URL")
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _REACTOR_KEYS:
            ours[key] = value
        else:
            theirs.append((key, value))
    netloc = parts.netloc or "localhost:6379"
    client_url = urlunsplit((parts.scheme, netloc, parts.path, urlencode(theirs), ""))
    host = netloc.rsplit("@", 1)[-1]
    display = urlunsplit((parts.scheme, host, parts.path, "", ""))

    def number(key: str, kind: type[float] | type[int], default: float | None) -> float | None:
        if key not in ours:
            return default
        expected = "a positive integer" if kind is int else "a positive number"
        try:
            value = kind(ours[key])
        except ValueError:
            raise bad_option(channel, display, key, ours[key], expected) from None
        if value <= 0:
            raise bad_option(channel, display, key, ours[key], expected)
        return value

    start = ours.get("start")
    if start is not None and start not in ("$", "0"):
        raise bad_option(channel, display, "start", start, "'$' or '0'")
    maxlen = number("maxlen", int, None)
    maxage = number("maxage", float, None)
    return RedisOptions(
        client_url=client_url,
        display=display,
        prefix=ours.get("prefix") or "reactor",
        worker=ours.get("worker") or _default_worker(),
        lease_s=float(number("lease", float, 30.0) or 30.0),
        block_ms=int(number("block_ms", int, 100) or 100),
        maxlen=int(maxlen) if maxlen is not None else None,
        maxage_s=maxage,
        approximate=ours.get("approx", "0") in ("1", "true", "yes"),
        start=start,
        publish_timeout_s=float(number("publish_timeout", float, 30.0) or 30.0),
    )
