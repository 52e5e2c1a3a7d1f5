"""Which groups a topic goes to: the bounded cache every backend routes through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from reactor.channels.groups import Group

__all__ = ["RouteCache"]

G = TypeVar("G", bound=Group[Any])

_ROUTES_CACHE = 4096


class RouteCache(dict[str, tuple[G, ...]]):
    """topic -> the groups whose patterns match it, computed on first use, bounded.

    ``cache[topic]`` is a plain dict lookup once the topic is known (the hot path
    of every publish); an unknown topic is matched against the groups and kept.
    Topics come from code, so the cache stays small; a flood of distinct ones
    (past 4096) starts it over instead of growing it without bound.

    Thread-safety: safe to read from any thread; each operation is atomic under the GIL.
    """

    def __init__(self, groups: Mapping[str, G]) -> None:
        super().__init__()
        self._groups = groups

    def __missing__(self, topic: str) -> tuple[G, ...]:
        if len(self) >= _ROUTES_CACHE:
            self.clear()
        groups = tuple(g for g in self._groups.values() if g.matches(topic))
        self[topic] = groups
        return groups
