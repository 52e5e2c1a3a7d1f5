"""Where things are in the text of a TOML file, for messages that point at a line.

tomllib parses a document but reports no positions, so the TOML loader
(:mod:`reactor.runtime.toml`) finds them here: the line of a ``[table]`` header
or of a ``key =`` line, the line and column of a syntax error, and the dotted
name of a key as a user would write it.
"""

from __future__ import annotations

import re
import tomllib

__all__ = ["Locator", "Where", "dotted", "syntax_problem"]

Where = tuple[str, ...]

_SYNTAX_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_SYNTAX_END = re.compile(r"\s*\(at end of document\)$")
_HEADER = re.compile(r"^\s*\[(?!\[)(?P<path>[^\]]*)\]\s*(?:#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")
_KEY_PART = re.compile(
    r"""\s*(?:(?P<bare>[A-Za-z0-9_-]+)|"(?P<basic>(?:[^"\\]|\\.)*)"|'(?P<literal>[^']*)')\s*"""
)
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def syntax_problem(name: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    """The problem text of a syntax error, with its line and column when tomllib gives them."""
    message = str(exc)
    position = _SYNTAX_POSITION.search(message)
    if position is not None:
        where = f"line {position.group(1)}, column {position.group(2)}"
        message = message[: position.start()]
    elif _SYNTAX_END.search(message) is not None:
        where = f"line {text.count(chr(10)) + 1} (end of file)"
        message = _SYNTAX_END.sub("", message)
    else:
        where = "syntax"
    return f"{name}: {where}: {message}; fix the TOML syntax there"


class Locator:
    """Finds the line of a table or of a key in the file text, best effort.

    tomllib does not report positions, so this scans for ``[a.b]`` headers and
    ``key =`` lines. Inline tables and dotted keys fall back to the line of the
    enclosing key.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: dict[Where, int] = {}
        for index, line in enumerate(self.lines):
            match = _HEADER.match(line)
            if match is not None:
                parts = _split_key(match.group("path"))
                if parts is not None:
                    self.headers.setdefault(parts, index)

    def table_line(self, where: Where) -> int | None:
        """1-based line of the table ``where``, if found."""
        index = self.headers.get(where)
        if index is not None:
            return index + 1
        if len(where) > 1:
            return self.key_line(where[:-1], where[-1])
        return None

    def key_line(self, where: Where, key: str) -> int | None:
        """1-based line of ``key`` inside the table ``where``, if found."""
        if not where:
            return self._top_level_line(key)
        start = self.headers.get(where)
        if start is None:
            if len(where) > 1:
                # A table written inline or with dotted keys: point at its key.
                return self.key_line(where[:-1], where[-1])
            return None
        for index in range(start + 1, len(self.lines)):
            line = self.lines[index]
            if _ANY_HEADER.match(line):
                break
            match = _KEY_PART.match(line)
            if match is not None and _part(match) == key:
                rest = line[match.end() :]
                if rest.startswith(("=", ".")):
                    return index + 1
        return start + 1

    def _top_level_line(self, key: str) -> int | None:
        for index, line in enumerate(self.lines):
            if _ANY_HEADER.match(line):
                break
            match = _KEY_PART.match(line)
            if (
                match is not None
                and _part(match) == key
                and line[match.end() :].startswith(("=", "."))
            ):
                return index + 1
        for path, index in sorted(self.headers.items(), key=lambda item: item[1]):
            if path[:1] == (key,):
                return index + 1
        return None


def _part(match: re.Match[str]) -> str:
    for group in ("bare", "basic", "literal"):
        value = match.group(group)
        if value is not None:
            return value
    return ""


def _split_key(text: str) -> Where | None:
    parts: list[str] = []
    position = 0
    while True:
        match = _KEY_PART.match(text, position)
        if match is None:
            return None
        parts.append(_part(match))
        position = match.end()
        if position == len(text):
            return tuple(parts)
        if text[position] != ".":
            return None
        position += 1


def dotted(where: Where) -> str:
    """``where`` as a dotted key, quoting the parts that are not bare keys."""
    return ".".join(part if _BARE.fullmatch(part) else f'"{part}"' for part in where)
