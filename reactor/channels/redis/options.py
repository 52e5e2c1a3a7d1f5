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

Every option is checked when the topology starts, as a ``sqlite:`` URL's are: an
unknown key (neither reactor's nor redis-py's) is refused with the closest known
one, numbers must be finite and in range, ``approx`` a boolean. redis-py's own
options are checked by redis-py's URL parser, so a typo such as ``?prefx=shop``
is one line naming the channel, not redis-py's ``TypeError`` at the first command.
"""

from __future__ import annotations

import inspect
import math
import os
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from reactor.channels.options import bad_option
from reactor.errors import TopologyError
from reactor.text import did_you_mean, redact_url

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


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
# Longest blocking read: a stop waits this long at most for a reader to notice it.
_MAX_BLOCK_MS = 60_000


def _redis_py_keys(scheme: str) -> frozenset[str] | None:
    """The query options redis-py takes in a URL (None: redis-py is not installed).

    redis-py hands every query option it does not parse itself to the connection
    class as a keyword argument, so what it takes is its parsers' keys plus the
    parameters of the connection and pool classes.
    """
    try:
        from redis import connection  # noqa: PLC0415 - optional extra, imported when used
    except ImportError:
        return None
    classes: list[type] = [connection.ConnectionPool, connection.Connection]
    classes += connection.Connection.__mro__[1:]
    if scheme == "rediss":
        classes.append(connection.SSLConnection)
    keys = set(getattr(connection, "URL_QUERY_ARGUMENT_PARSERS", {}))
    for cls in classes:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                keys.add(parameter.name)
    keys -= {"self", "host", "port", "password", "username", "connection_class"}
    return frozenset(keys)


def _check_redis_py(url: str, channel: str, display: str, theirs: list[tuple[str, str]]) -> None:
    """Check redis-py's own options in ``url`` as redis-py will parse them."""
    scheme = urlsplit(url).scheme
    known = _redis_py_keys(scheme)
    if known is None:
        return  # opening the channel says that the redis extra is missing
    for key, value in theirs:
        if key not in known:
            raise TopologyError(
                f"channel {channel!r}: unknown redis option {key!r} in {display}"
                f"{did_you_mean(key, known | _REACTOR_KEYS)} (reactor's options: "
                f"{', '.join(sorted(_REACTOR_KEYS))}; or one of redis-py's connection "
                "options, such as socket_timeout or client_name); fix the channel's backend URL"
            )
        if value.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity"):
            raise bad_option(channel, display, key, value, "a finite value")
    from redis.connection import parse_url as redis_parse  # noqa: PLC0415

    try:
        redis_parse(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        bad = next((k for k, _ in theirs if f"'{k}'" in str(exc)), None)
        if bad is None:
            raise TopologyError(
                f"channel {channel!r}: redis-py refuses {display}: {exc}; fix the channel's "
                "backend URL"
            ) from None
        raise bad_option(
            channel, display, bad, dict(theirs)[bad], "what redis-py accepts there"
        ) from None


def parse_url(url: str, channel: str) -> RedisOptions:
    """Split ``url`` into reactor's options and redis-py's URL, checking both.

    Args:
        url: the channel's ``backend`` URL.
        channel: the channel's name, for error messages.

    Returns:
        The options.

    Raises:
        TopologyError: an unknown option or a bad value; the message names the
            channel and the option (and the closest known option to a typo).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise TopologyError(
            f"channel {channel!r}: {redact_url(url)!r} is not a redis:// or rediss:// URL"
        )
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
    _check_redis_py(client_url, channel, display, theirs)

    def number(key: str, kind: type[float] | type[int], default: float | None) -> float | None:
        if key not in ours:
            return default
        expected = "a positive integer" if kind is int else "a positive, finite number"
        if kind is int and key == "block_ms":
            expected = f"an integer from 1 to {_MAX_BLOCK_MS}"
        try:
            value = kind(ours[key])
        except ValueError:
            raise bad_option(channel, display, key, ours[key], expected) from None
        if not (math.isfinite(value) and value > 0):
            raise bad_option(channel, display, key, ours[key], expected)
        if key == "block_ms" and value > _MAX_BLOCK_MS:
            raise bad_option(channel, display, key, ours[key], expected)
        return value

    for key in ("prefix", "worker"):
        if key in ours and not ours[key].strip():
            raise bad_option(channel, display, key, ours[key], "a non-empty name")
    approx = ours.get("approx", "0")
    if approx.lower() not in _BOOLEANS:
        raise bad_option(channel, display, "approx", approx, "1 or 0 (true/false, yes/no)")
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
        approximate=_BOOLEANS[approx.lower()],
        start=start,
        publish_timeout_s=float(number("publish_timeout", float, 30.0) or 30.0),
    )
