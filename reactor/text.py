"""Text that came from users, made safe to show: no terminal control, no secrets.

Event data, exception messages and URLs are written by users and reach a terminal,
a log line or a `$system` event. Two rules hold wherever reactor shows such text:
control sequences are made visible instead of obeyed (an exception message holding
``ESC[2J`` must not clear the dashboard), and a URL never shows its password.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["did_you_mean", "names_or_none", "printable", "redact_url"]

# C0 controls except tab and newline, DEL, and the C1 range (0x9b is a one-byte CSI).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    return "\\x1b" if char == "\x1b" else f"\\x{ord(char):02x}"


def printable(text: str, *, newlines: bool = True) -> str:
    """Return ``text`` with every control character shown as an escape, not obeyed.

    Args:
        text: text from a user: event data, an exception message, a name.
        newlines: keep line breaks and tabs as they are; when False, they are
            escaped too, so the text stays on one line.

    Returns:
        The text, with ``ESC``, ``BEL``, carriage returns and the like written as
        ``\\x1b``, ``\\x07``, ``\\x0d``: an escape sequence cannot move the cursor,
        clear the screen, set the title or open a link.
    """
    text = _CONTROL.sub(_visible, text)
    if not newlines:
        text = text.replace("\n", "\\n").replace("\t", "\\t")
    return text


def redact_url(url: str) -> str:
    """Return ``url`` with its password (if any) replaced by ``***``.

    Args:
        url: a channel or broker URL, as the user wrote it.

    Returns:
        The same URL with ``user:secret@`` written as ``user:***@`` (and a bare
        ``secret@`` as ``***@``); a URL without credentials, or text that is not a
        URL, comes back unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    credentials, host = parts.netloc.rsplit("@", 1)
    user, has_password, _ = credentials.partition(":")
    hidden = f"{user}:***" if has_password else "***"
    return urlunsplit((parts.scheme, f"{hidden}@{host}", parts.path, parts.query, parts.fragment))


def names_or_none(names: Iterable[str]) -> str:
    """``names`` sorted and comma-separated, or ``"none"``: what there is, for an error message."""
    return ", ".join(sorted(names)) or "none"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the choice closest to ``word``, or ``""``.

    Args:
        word: what the user wrote (a channel name, an option key).
        choices: what they could have meant.

    Returns:
        A suffix for an error message: empty when nothing is close enough.
    """
    close = difflib.get_close_matches(word, [str(choice) for choice in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
