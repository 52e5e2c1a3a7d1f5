"""Topics and AMQP-style subscription patterns."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor import TopicPattern
from reactor.errors import InvalidTopicError, ReactorError
from reactor.messages.topics import validate_topic


@pytest.mark.parametrize(
    "topic",
    ["orders", "orders.created", "a.b.c.d", "A-1_b.x-y", "$system.actor.started", "$deadletter"],
)
def test_valid_topics(topic: str) -> None:
    assert validate_topic(topic) == topic
    assert validate_topic(topic) == topic  # second call comes from the cache


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "empty"),
        (".a", "word 1 is empty"),
        ("a.", "word 2 is empty"),
        ("a..b", "word 2 is empty"),
        ("a b", "characters other than"),
        ("é", "characters other than"),
        ("a.*", "wildcard"),
        ("orders.#", "wildcard"),
        ("a.$b", "'$'"),
        ("a$", "'$'"),
        ("$", "characters other than"),
        ("a\n", "characters other than"),
    ],
)
def test_invalid_topics_name_the_topic_and_rule(topic: str, reason: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        validate_topic(topic)
    assert repr(topic) in str(info.value)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ReactorError)


@pytest.mark.parametrize("topic", [None, 1, b"orders", ["a"]])
def test_non_str_topics_are_invalid(topic: Any) -> None:
    with pytest.raises(InvalidTopicError, match="must be a str"):
        validate_topic(topic)


MATCHES = [
    ("orders.created", "orders.created", True),
    ("orders.created", "orders.created.x", False),
    ("orders.created", "orders", False),
    ("orders.*", "orders.created", True),
    ("orders.*", "orders", False),
    ("orders.*", "orders.a.b", False),
    ("orders.#", "orders", True),
    ("orders.#", "orders.a", True),
    ("orders.#", "orders.a.b", True),
    ("orders.#", "ordersx", False),
    ("orders.#", "ordersx.a", False),
    ("#", "anything.at.all", True),
    ("#", "x", True),
    ("#.created", "orders.created", True),
    ("#.created", "created", True),
    ("#.created", "a.b.created", True),
    ("#.created", "a.created.b", False),
    ("a.#.z", "a.z", True),
    ("a.#.z", "a.b.c.z", True),
    ("a.#.z", "a.b.c", False),
    ("*.created", "orders.created", True),
    ("*.created", "created", False),
    ("*", "orders", True),
    ("*", "orders.x", False),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("a.*.#", "a.b.c.d", True),
    ("#.#", "a", True),
    ("a.#.#.b", "a.b", True),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    # Wildcards at the start never match reserved topics...
    ("#", "$system.actor.started", False),
    ("#", "$deadletter", False),
    ("*", "$deadletter", False),
    ("*.actor.started", "$system.actor.started", False),
    ("#.started", "$system.actor.started", False),
    # ...but naming them explicitly does.
    ("$system.#", "$system.actor.started", True),
    ("$system.#", "$system", True),
    ("$system.*.started", "$system.actor.started", True),
    ("$deadletter", "$deadletter", True),
    ("$system.#", "system.actor", False),
    # A wildcard in a later word does not care about '$' (it can only lead).
    ("a.#", "a.b", True),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCHES)
def test_pattern_matching(pattern: str, topic: str, expected: bool) -> None:
    assert TopicPattern.compile(pattern).matches(topic) is expected
    assert reference_match(pattern.split("."), topic.split(".")) is expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "empty"),
        ("a..b", "word 2 is empty"),
        ("a.", "word 2 is empty"),
        ("or*ders", "mixes a wildcard"),
        ("a.#b", "mixes a wildcard"),
        ("**", "mixes a wildcard"),
        ("$*", "mixes a wildcard"),
        ("a.$b", "'$'"),
        ("a b", "characters other than"),
    ],
)
def test_bad_patterns_name_the_pattern_and_problem(pattern: str, reason: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        TopicPattern.compile(pattern)
    assert repr(pattern) in str(info.value)
    assert reason in str(info.value)
    with pytest.raises(InvalidTopicError):
        TopicPattern(pattern)


@pytest.mark.parametrize("pattern", [None, 3, b"a.#"])
def test_non_str_patterns_are_invalid(pattern: Any) -> None:
    with pytest.raises(InvalidTopicError, match="must be a str"):
        TopicPattern.compile(pattern)


def test_compile_caches_and_patterns_are_values() -> None:
    p = TopicPattern.compile("orders.#")
    assert TopicPattern.compile("orders.#") is p
    assert p.pattern == "orders.#"
    assert str(p) == "orders.#"
    assert TopicPattern("orders.#") == p
    assert hash(TopicPattern("orders.#")) == hash(p)
    assert TopicPattern("orders.*") != p
    assert repr(p) == "TopicPattern(pattern='orders.#')"


def reference_match(pattern: list[str], topic: list[str]) -> bool:
    """Obviously-correct recursive AMQP matcher, plus the leading-'$' rule."""
    if pattern and pattern[0] in ("*", "#") and topic and topic[0].startswith("$"):
        return False
    return _words_match(pattern, topic)


def _words_match(pattern: list[str], topic: list[str]) -> bool:
    if not pattern:
        return not topic
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, topic[i:]) for i in range(len(topic) + 1))
    if not topic:
        return False
    if head == "*" or head == topic[0]:
        return _words_match(rest, topic[1:])
    return False


# A tiny alphabet makes literal words collide often, so matches are common.
words = st.sampled_from(["a", "b", "c"])
first_words = words | st.sampled_from(["$a", "$sys"])
topics = st.builds(lambda first, rest: [first, *rest], first_words, st.lists(words, max_size=5))
pattern_words = st.sampled_from(["a", "b", "*", "#"])
patterns = st.builds(
    lambda first, rest: [first, *rest],
    pattern_words | st.just("$a"),
    st.lists(pattern_words, max_size=5),
)


@given(patterns, topics)
def test_matches_agrees_with_the_reference(pattern: list[str], topic: list[str]) -> None:
    compiled = TopicPattern.compile(".".join(pattern))
    assert compiled.matches(".".join(topic)) is reference_match(pattern, topic)


@given(topics)
def test_generated_topics_are_valid(topic: list[str]) -> None:
    assert validate_topic(".".join(topic)) == ".".join(topic)
