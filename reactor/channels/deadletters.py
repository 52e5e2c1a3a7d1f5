"""Choosing and checking stored dead letters: what every backend that stores them shares.

The stored forms differ (a row of a file, a Redis stream entry, a letter kept in
memory); which letters a redrive or purge acts on, and the errors for a group or an
id that names nothing, are the same on every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, TypeVar

from reactor.errors import UnknownDeadLetterError, UnknownGroupError
from reactor.text import names_or_none

if TYPE_CHECKING:
    from reactor.channels.backend import ChannelConfig

__all__ = ["check_letter_group", "choose_letters", "missing_letters"]


def check_letter_group(config: ChannelConfig, group: str | None) -> None:
    """Refuse a ``group`` the channel does not declare (a typo would match no letter).

    Raises:
        UnknownGroupError: ``group`` is not one of the channel's groups.
    """
    if group is None or any(spec.name == group for spec in config.groups):
        return
    known = names_or_none(spec.name for spec in config.groups)
    raise UnknownGroupError(
        f"channel {config.name!r} has no group {group!r} (groups: {known}); "
        "name a consumer group declared on this channel"
    )


def missing_letters(channel: str, ids: Collection[str], stored: Iterable[str]) -> None:
    """Refuse ``ids`` that name no stored letter of ``channel``, before anything is done.

    Raises:
        UnknownDeadLetterError: some id is not in ``stored``.
    """
    missing = sorted(set(ids) - set(stored))
    if missing:
        shown = ", ".join(repr(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise UnknownDeadLetterError(
            f"channel {channel!r} has no dead letter with id {shown}; "
            "list them first (System.dead_letters or `reactor dead-letters TARGET list`)"
        )


_Letter = TypeVar("_Letter")  # a backend's stored form of a dead letter


def choose_letters(
    config: ChannelConfig,
    ids: Collection[str] | None,
    group: str | None,
    stored: Callable[[str | None], Iterable[_Letter]],
    id_of: Callable[[_Letter], str],
) -> list[_Letter]:
    """The stored letters a redrive or purge acts on: all of ``group``'s, or those of ``ids``.

    Args:
        config: the channel's declaration (its groups).
        ids: the letters' ids, or None for every letter (of ``group``, if given).
        group: only this group's letters, or None for every group's.
        stored: reads the stored letters of a group (or of all, given None), oldest first.
        id_of: a stored letter's id.

    Returns:
        The chosen letters, in the order of ``ids`` (or stored order), each once.

    Raises:
        UnknownGroupError: ``group`` is not declared on this channel.
        UnknownDeadLetterError: an id names no stored letter; nothing is chosen.
    """
    check_letter_group(config, group)
    letters = list(stored(group))
    if ids is None:
        return letters
    by_id = {id_of(letter): letter for letter in letters}
    missing_letters(config.name, ids, by_id)
    return [by_id[i] for i in dict.fromkeys(ids)]
