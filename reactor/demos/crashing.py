"""What the demos that crash on purpose share: a supervisor that restarts quickly."""

from __future__ import annotations

from reactor.supervision.strategy import Backoff, OneForOne

__all__ = ["quick_restarts"]


def quick_restarts(max_restarts: int) -> OneForOne:
    """A strategy for children that crash on purpose, now and then.

    Restarts come quickly (50 ms, at most 0.5 s apart) and the backoff starts over
    after 2 s of calm, so the dashboard shows recovery rather than waiting.

    Args:
        max_restarts: restarts allowed within 30 s; generous, so the demo never escalates.
    """
    backoff = Backoff(min_s=0.05, max_s=0.5, reset_after_s=2.0)
    return OneForOne(max_restarts=max_restarts, within_s=30.0, backoff=backoff)
