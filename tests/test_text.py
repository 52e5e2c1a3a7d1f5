"""User text shown safely: control sequences escaped, URL passwords hidden."""

from __future__ import annotations

import pytest

from reactor.text import printable, redact_url


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("boom \x1b[2J", "boom \\x1b[2J"),
        (
            "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\",
            "\\x1b]8;;http://evil\\x1b\\link\\x1b]8;;\\x1b\\",
        ),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("over\rwrite", "over\\x0dwrite"),
        ("csi \x9b2J", "csi \\x9b2J"),
        ("plain text, ünïcode ✓", "plain text, ünïcode ✓"),
    ],
)
def test_control_sequences_are_shown_not_obeyed(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_line_breaks_are_kept_or_escaped_on_request() -> None:
    assert printable("a\n\tb") == "a\n\tb"
    assert printable("a\n\tb", newlines=False) == "a\\n\\tb"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://app:hunter2@cache/1?prefix=shop", "redis://app:***@cache/1?prefix=shop"),
        ("rediss://hunter2@cache", "rediss://***@cache"),
        ("redis://cache:6379", "redis://cache:6379"),
        ("sqlite:///tmp/log.db", "sqlite:///tmp/log.db"),
        ("memory://", "memory://"),
    ],
)
def test_urls_never_show_a_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url)
