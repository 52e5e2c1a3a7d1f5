"""Supervision strategies, restart types and backoff, as plain values."""

from __future__ import annotations

import random
from typing import Any, ClassVar, Literal

import attrs

from reactor.schema import option, seconds

__all__ = [
    "RESTART_TYPES",
    "Backoff",
    "OneForAll",
    "OneForOne",
    "RestForOne",
    "RestartType",
    "Retry",
    "Strategy",
]

RestartType = Literal["permanent", "transient", "temporary"]
RESTART_TYPES: tuple[RestartType, ...] = ("permanent", "transient", "temporary")


def _exponential(
    first_s: float, max_s: float, multiplier: float, jitter: float, *, step: int, rng: random.Random
) -> float:
    """``first_s * multiplier ** step``, capped at ``max_s``, spread by ``±jitter``."""
    if max_s == 0:
        return 0.0
    # The exponent is capped so a long run of failures cannot overflow the float.
    base = min(max_s, first_s * multiplier ** min(step, 64))
    if jitter:
        base *= 1 + rng.uniform(-jitter, jitter)
    return max(0.0, min(max_s, base))


# Every option of these values is checked at construction (``strict``): they are
# built by hand as often as from a topology, and a bad one must fail where it is made.


def _seconds(default: float, most: float, doc: str) -> Any:
    """A strict duration option from 0 to ``most`` seconds."""
    return seconds(default, doc, min=0, max=most, strict=True)


def _factor(default: float, most: float, doc: str) -> Any:
    """A strict dimensionless option from 0 to ``most``."""
    return option(default, kind="number", min=0, max=most, strict=True, doc=doc)


def _jitter() -> Any:
    """The random spread of a delay, shared by :class:`Retry` and :class:`Backoff`."""
    return _factor(0.2, 1, "random spread of each delay, as a fraction (0.2: ±20%)")


@attrs.frozen(slots=True)
class Retry:
    """When a failed event is tried again: exponential delay with jitter, capped.

    The retry after the ``n``-th failed attempt waits ``min_s * multiplier ** (n - 1)``,
    at most ``max_s``, spread by ``±jitter`` so events that failed together do not
    all come back together. Other events flow meanwhile; later events of the same
    key wait behind it. A consumer that fails event after event also pauses between
    attempts on this curve (see :mod:`reactor.runtime.consumer`).
    """

    min_s: float = _seconds(0.1, 3600, "delay before the second attempt")
    max_s: float = _seconds(5.0, 3600, "longest delay between attempts; 0 retries at once")
    multiplier: float = _factor(2.0, 100, "growth of the delay per failure")
    jitter: float = _jitter()

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1-based)."""
        if failures < 1:
            return 0.0
        return _exponential(
            self.min_s, self.max_s, self.multiplier, self.jitter, step=failures - 1, rng=rng
        )


@attrs.frozen(slots=True)
class Backoff:
    """Exponential backoff between restarts of one child, with jitter.

    The first restart after a stable period is immediate (as in OTP), so a rare
    crash costs no latency; each further consecutive restart waits
    ``min_s * multiplier ** (n - 2)``, capped at ``max_s``, spread by ``±jitter``.
    A child starts over once it has run ``reset_after_s`` without crashing, or has
    handled an event since it was last started (it works again: as Akka resets
    after a successful start, a consumer that makes progress is not held back).
    """

    min_s: float = _seconds(0.01, 3600, "delay before the second restart in a row")
    max_s: float = _seconds(5.0, 3600, "longest delay between restarts; 0 turns backoff off")
    multiplier: float = _factor(2.0, 100, "growth of the delay per further restart")
    jitter: float = _jitter()
    reset_after_s: float = _seconds(
        10.0, 86_400, "time without a crash after which the delays start over"
    )

    def delay(self, consecutive: int, rng: random.Random) -> float:
        """Seconds to wait before the ``consecutive``-th restart in a row (1-based)."""
        if consecutive <= 1:
            return 0.0
        return _exponential(
            self.min_s, self.max_s, self.multiplier, self.jitter, step=consecutive - 2, rng=rng
        )


def _is_backoff(value: object) -> list[str]:
    if isinstance(value, Backoff):
        return []
    return [f"backoff must be a reactor.Backoff, got {type(value).__name__}"]


@attrs.frozen(slots=True)
class Strategy:
    """How a supervisor restarts children, and how many restarts it tolerates.

    Attributes:
        max_restarts: restarts allowed within ``within_s`` seconds; one more and the
            supervisor stops its children and fails to its parent.
        within_s: the sliding window of the restart intensity.
        backoff: delay between consecutive restarts of the same child.
    """

    kind: ClassVar[str] = "one_for_one"
    max_restarts: int = option(
        10,
        kind="int",
        min=0,
        strict=True,
        doc="restarts allowed within within_s; one more escalates",
    )
    within_s: float = _seconds(10.0, 86_400, "the sliding window of the restart intensity")
    backoff: Backoff = option(
        kind="custom",
        factory=Backoff,
        toml="table",
        check=_is_backoff,
        strict=True,
        doc="delay between consecutive restarts of one child",
    )


@attrs.frozen(slots=True)
class OneForOne(Strategy):
    """Restart only the child that exited."""

    kind: ClassVar[str] = "one_for_one"


@attrs.frozen(slots=True)
class OneForAll(Strategy):
    """Stop every other child, then restart them all in start order."""

    kind: ClassVar[str] = "one_for_all"


@attrs.frozen(slots=True)
class RestForOne(Strategy):
    """Restart the child that exited and every child started after it."""

    kind: ClassVar[str] = "rest_for_one"
