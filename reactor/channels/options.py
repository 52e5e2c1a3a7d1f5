"""The errors of a channel URL's options, worded once for every backend."""

from __future__ import annotations

from collections.abc import Iterable

from reactor.errors import TopologyError
from reactor.text import did_you_mean

__all__ = ["bad_option", "unknown_option"]


def bad_option(channel: str, url: str, option: str, value: str, expected: str) -> TopologyError:
    """The error for ``option=value`` in a channel's URL, which must be ``expected``.

    ``url`` is shown as given: pass it without its password.
    """
    return TopologyError(
        f"channel {channel!r}: option {option}={value!r} in {url} must be {expected}; "
        "fix the channel's backend URL"
    )


def unknown_option(
    channel: str, url: str, backend: str, option: str, known: Iterable[str]
) -> TopologyError:
    """The error for an option the ``backend`` does not have in a channel's URL.

    ``url`` is shown as given: pass it without its password.
    """
    known = sorted(known)
    return TopologyError(
        f"channel {channel!r}: unknown {backend} option {option!r} in {url}"
        f"{did_you_mean(option, known)} (known: {', '.join(known)}); fix the channel's backend URL"
    )
