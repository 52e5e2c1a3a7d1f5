"""What a ``sqlite:`` channel URL says: the file and its options."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import parse_qs

import attrs

from reactor.channels.options import bad_option, unknown_option
from reactor.errors import TopologyError

__all__ = ["SqliteOptions", "Synchronous", "parse_url"]

Synchronous = Literal["normal", "full"]

_KNOWN = ("max_age", "max_events", "synchronous")


@attrs.frozen(slots=True)
class SqliteOptions:
    """What a ``sqlite:`` URL says: the file and its options."""

    path: str
    synchronous: Synchronous = "normal"
    max_events: int | None = None
    max_age: float | None = None


def parse_url(url: str, channel: str = "?") -> SqliteOptions:
    """Parse ``sqlite:///path.db?option=value``.

    Raises:
        TopologyError: malformed URL or an unknown or bad option; names the channel.
    """
    what = f"channel {channel!r}"
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise TopologyError(
            f"{what}: sqlite backend URL {url!r} must look like sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path, _, query = url[len(prefix) :].partition("?")
    if not path or path.endswith("/"):
        raise TopologyError(f"{what}: sqlite backend URL {url!r} names no file")
    options: dict[str, Any] = {}
    for name, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        value = values[-1]
        if name == "synchronous":
            if value.lower() not in ("normal", "full"):
                raise bad_option(channel, url, name, value, "'normal' or 'full'")
            options[name] = value.lower()
        elif name == "max_events":
            if not value.isdigit() or int(value) < 1:
                raise bad_option(channel, url, name, value, "a positive integer")
            options[name] = int(value)
        elif name == "max_age":
            try:
                age = float(value)
            except ValueError:
                age = -1.0
            if not age > 0:
                raise bad_option(channel, url, name, value, "a positive number of seconds")
            options[name] = age
        else:
            raise unknown_option(channel, url, "sqlite", name, _KNOWN)
    return SqliteOptions(path, **options)
