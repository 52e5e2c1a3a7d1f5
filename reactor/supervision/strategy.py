"""Supervision strategies, restart types and backoff, as plain values."""

from __future__ import annotations

import random
from typing import ClassVar, Literal

import attrs

__all__ = [
    "RESTART_TYPES",
    "Backoff",
    "OneForAll",
    "OneForOne",
    "RestForOne",
    "RestartType",
    "Strategy",
]

RestartType = Literal["permanent", "transient", "temporary"]
RESTART_TYPES: tuple[RestartType, ...] = ("permanent", "transient", "temporary")


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(slots=True)
class Backoff:
    """Exponential backoff between restarts of one child, with jitter.

    The first restart after a stable period is immediate (as in OTP), so a rare
    crash costs no latency; each further consecutive restart waits
    ``min_s * multiplier ** (n - 2)``, capped at ``max_s``, spread by ``±jitter``.
    A child that has run ``reset_after_s`` without crashing starts over.
    """

    min_s: float = attrs.field(default=0.01, validator=_non_negative)
    max_s: float = attrs.field(default=5.0, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.2, validator=_non_negative)
    reset_after_s: float = attrs.field(default=10.0, validator=_non_negative)

    def delay(self, consecutive: int, rng: random.Random) -> float:
        """Seconds to wait before the ``consecutive``-th restart in a row (1-based)."""
        if consecutive <= 1 or self.max_s == 0:
            return 0.0
        base = min(self.max_s, self.min_s * self.multiplier ** (consecutive - 2))
        if self.jitter:
            base *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(0.0, min(self.max_s, base))


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
    max_restarts: int = attrs.field(default=10, validator=attrs.validators.ge(0))
    within_s: float = attrs.field(default=10.0, validator=_non_negative)
    backoff: Backoff = attrs.field(factory=Backoff)


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
