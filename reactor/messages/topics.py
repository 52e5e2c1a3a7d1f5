"""Topics and subscription patterns.

A topic is one or more dotted words, such as ``orders.created``. A word is made
of ``A-Z a-z 0-9 _ -``; the first word may start with ``$``, which marks
reserved system topics (``$system.actor.started``, ``$deadletter``).

A pattern is a topic whose words may also be wildcards, AMQP style: ``*``
matches exactly one word and ``#`` matches zero or more words, so
``orders.#`` matches ``orders`` and ``orders.a.b``, and ``#`` matches every
topic. As in MQTT, a pattern that *starts* with ``*`` or ``#`` does not match
topics whose first word starts with ``$``: a catch-all subscription does not
receive system events unless it names ``$system...`` explicitly.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable

import attrs

from reactor.errors import InvalidTopicError

__all__ = ["TopicPattern", "validate_topic"]

_WORD = re.compile(r"[A-Za-z0-9_-]+")
_TOPIC = re.compile(r"\$?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_RULE = (
    "a topic is dotted words such as 'orders.created'; a word is letters, digits, '_' or '-', "
    "and only the first word may start with '$'"
)
# Bounded caches: topics and patterns come from code and config, so a few
# thousand distinct ones is plenty; a flood of distinct ones just clears it.
_CACHE_MAX = 4096
_valid_topics: set[str] = set()
_patterns: dict[str, TopicPattern] = {}


def validate_topic(topic: str) -> str:
    """Check that ``topic`` is a well-formed topic and return it.

    Results are cached, so validating the same topic again costs a set lookup.

    Args:
        topic: the topic to check, e.g. ``"orders.created"``.

    Returns:
        ``topic`` itself.

    Raises:
        InvalidTopicError: ``topic`` is not a string or breaks the topic rules;
            the message names the topic and the rule.

    Thread-safety: safe.
    """
    if topic.__class__ is str and topic in _valid_topics:
        return topic
    if not isinstance(topic, str):
        raise InvalidTopicError(f"topic must be a str, got {type(topic).__name__}: {topic!r}")
    if _TOPIC.fullmatch(topic) is None:
        raise InvalidTopicError(f"invalid topic {topic!r}: {_explain(topic, 'topic')}")
    topic = str.__str__(topic)  # a str subclass could change under us; cache the plain value
    if len(_valid_topics) >= _CACHE_MAX:
        _valid_topics.clear()
    _valid_topics.add(topic)
    return topic


def _explain(text: str, what: str, *, wildcards: bool = False) -> str:
    """Say which rule ``text`` breaks (called only once we know it breaks one)."""
    if text == "":
        return f"the {what} is empty; {_RULE}"
    words = text.split(".")
    for position, word in enumerate(words, start=1):
        if word == "":
            return f"word {position} is empty (leading, trailing or doubled '.'); {_RULE}"
        if wildcards and word in ("*", "#"):
            continue
        body = word[1:] if position == 1 and word.startswith("$") else word
        if "$" in body:
            return f"word {word!r} has a '$' that is not at the start of the first word; {_RULE}"
        if "*" in word or "#" in word:
            return (
                f"word {word!r} mixes a wildcard with other characters; '*' and '#' must be "
                "whole words"
                if wildcards
                else f"word {word!r} has a wildcard; '*' and '#' are only allowed in patterns"
            )
        if _WORD.fullmatch(body) is None:
            return f"word {word!r} has characters other than letters, digits, '_' or '-'; {_RULE}"
    return _RULE


def _no_dollar(topic: str) -> bool:
    return not topic.startswith("$")


@attrs.frozen(slots=True)
class TopicPattern:
    """A compiled subscription pattern (AMQP style: ``*`` one word, ``#`` any words).

    Build one with :meth:`compile`, which caches; constructing ``TopicPattern(p)``
    directly validates and compiles too. Two patterns are equal when their
    pattern text is.

    Attributes:
        pattern: the pattern text, e.g. ``"orders.#"``.

    Raises:
        InvalidTopicError: the pattern is malformed; the message names it and says why.

    Thread-safety: immutable; share freely.
    """

    pattern: str
    # The matcher is derived from ``pattern``, so it takes no part in eq/hash/repr.
    _match: Callable[[str], bool] = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_match", _compile(self.pattern))

    @classmethod
    def compile(cls, pattern: str) -> TopicPattern:
        """Return the compiled pattern for ``pattern``, from a cache when possible.

        Args:
            pattern: the pattern text, e.g. ``"orders.*"`` or ``"$system.#"``.

        Returns:
            A :class:`TopicPattern`.

        Raises:
            InvalidTopicError: the pattern is malformed.
        """
        if pattern.__class__ is str:
            cached = _patterns.get(pattern)
            if cached is not None:
                return cached
        compiled = cls(pattern)
        if len(_patterns) >= _CACHE_MAX:
            _patterns.clear()
        _patterns[compiled.pattern] = compiled
        return compiled

    def matches(self, topic: str) -> bool:
        """Return whether ``topic`` matches this pattern.

        ``topic`` is assumed to be valid (events validate theirs when created).

        Args:
            topic: the topic of an event, e.g. ``"orders.created"``.

        Returns:
            ``True`` if the pattern matches the topic.
        """
        return self._match(topic)

    def __str__(self) -> str:
        return self.pattern


def _compile(pattern: str) -> Callable[[str], bool]:
    """Validate ``pattern`` and return the fastest matcher that implements it."""
    if not isinstance(pattern, str):
        raise InvalidTopicError(f"pattern must be a str, got {type(pattern).__name__}: {pattern!r}")
    words = pattern.split(".")
    for position, word in enumerate(words, start=1):
        if word in ("*", "#"):
            continue
        body = word[1:] if position == 1 and word.startswith("$") else word
        if _WORD.fullmatch(body) is None:
            raise InvalidTopicError(
                f"invalid pattern {pattern!r}: {_explain(pattern, 'pattern', wildcards=True)}"
            )
    # '#.#' means the same as '#'; collapsing runs keeps the regex from backtracking.
    collapsed: list[str] = []
    for word in words:
        if not (word == "#" and collapsed and collapsed[-1] == "#"):
            collapsed.append(word)
    wildcards = [w for w in collapsed if w in ("*", "#")]

    # Fast paths for the shapes nearly every subscription has.
    if not wildcards:
        return functools.partial(operator.eq, pattern)
    if collapsed == ["#"]:
        return _no_dollar
    if wildcards == ["#"] and collapsed[-1] == "#":
        prefix = ".".join(collapsed[:-1])
        prefix_dot = prefix + "."

        def match_prefix(topic: str) -> bool:
            return topic == prefix or topic.startswith(prefix_dot)

        return match_prefix

    # General case: match '.' + topic, so every word (including the first) is
    # '\.word' and '#' is simply zero or more of them.
    parts: list[str] = []
    for word in collapsed:
        if word == "*":
            parts.append(r"\.[^.]++")
        elif word == "#":
            parts.append(r"(?:\.[^.]++)*")
        else:
            parts.append(re.escape("." + word))
    fullmatch = re.compile("".join(parts)).fullmatch
    if collapsed[0] in ("*", "#"):

        def match_wild(topic: str) -> bool:
            return not topic.startswith("$") and fullmatch("." + topic) is not None

        return match_wild

    def match_regex(topic: str) -> bool:
        return fullmatch("." + topic) is not None

    return match_regex
