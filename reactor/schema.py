"""Options declared once: name, kind, default, bounds and a one-line doc.

A declaration (a channel, a consumer, a backoff) lists its options as attrs
fields made with :func:`option`. Everything else derives from there: the
builder's keyword arguments, the TOML keys and their value types, validation
and the README's option table. This module is the machinery; the declarations
live beside what they configure (``reactor.runtime.declarations``,
``reactor.supervision.strategy``).

Durations and rates are always bounded on both sides: ``nan``, ``inf``, a
negative value (and zero, where it means nothing) and a value past the
documented maximum are refused, because a timer armed with any of them never
fires or fires in a loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

import attrs

from reactor.text import did_you_mean

__all__ = [
    "Option",
    "check_keywords",
    "count",
    "option",
    "options_of",
    "problems_of",
    "seconds",
    "string",
    "table",
    "time_limit",
]

Kind = Literal[
    "int",  # an integer (never a bool)
    "seconds",  # a finite duration in seconds
    "rate",  # a finite number of events per second
    "number",  # a finite plain number (a factor, a fraction)
    "bool",
    "text",  # a non-empty string
    "choice",  # one of ``choices``
    "start",  # where a new group starts: 'earliest', 'latest', an offset or a datetime
    "custom",  # checked by the option's own ``check``
]

# How a value of each kind is written in a TOML file, for the loader's type check.
TOML_TYPES: dict[str, str] = {
    "int": "int",
    "seconds": "number",
    "rate": "number",
    "number": "number",
    "bool": "bool",
    "text": "str",
    "choice": "str",
    "start": "start",
}

_KEY = "reactor.option"

Check = Callable[[Any], Sequence[str]]


@attrs.frozen(slots=True)
class Option:
    """One option of a declaration, as the schema states it.

    Attributes:
        name: the keyword argument, TOML key and attribute name.
        kind: how the value is checked (see ``Kind``).
        doc: one line saying what it does.
        default: the default value, or ``attrs.NOTHING`` when it must be given.
        minimum: smallest allowed value of a number (``positive`` excludes it).
        maximum: largest allowed value of a number.
        positive: zero is refused (it means nothing for this option).
        choices: the allowed values of a ``choice``.
        label: what a ``choice`` value is called in messages ("overflow policy").
        required: a TOML table must give it (the builder may fill it later).
        optional: ``None`` is allowed and means "off".
        toml: the TOML value type (``str``, ``int``, ``number``, ``bool``,
            ``table``, ...), or ``None`` if the option is not written in TOML.
        check: a further check returning messages (the whole check of ``custom``).
    """

    name: str
    kind: Kind
    doc: str
    default: Any
    minimum: float | None
    maximum: float | None
    positive: bool
    choices: tuple[str, ...]
    label: str | None
    required: bool
    optional: bool
    toml: str | None
    check: Check | None = attrs.field(repr=False)

    @property
    def has_default(self) -> bool:
        return self.default is not attrs.NOTHING

    def expected(self) -> str:
        """The allowed values in words: ``a positive number of seconds, at most 86400``."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "text":
            return "a non-empty string"
        if self.kind == "start":
            return "'earliest', 'latest', an offset >= 0 or a datetime"
        noun = {
            "int": "integer",
            "seconds": "number of seconds",
            "rate": "number of events per second",
            "number": "number",
        }.get(self.kind, "value")
        if self.positive:
            text = f"a positive {noun}"
        elif self.minimum is not None:
            text = f"{'an' if noun[0] in 'aeiou' else 'a'} {noun} >= {_number(self.minimum)}"
        else:
            text = f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
        if self.maximum is not None:
            text += f", at most {_number(self.maximum)}"
        return text

    def problems(self, value: Any, prefix: str = "") -> list[str]:
        """Messages for what is wrong with ``value``, each naming the option; ``[]`` if fine."""
        name = prefix + self.name
        if value is None and self.optional:
            return []
        if self.kind == "custom":
            return list(self.check(value)) if self.check is not None else []
        if not self._allows(value):
            if self.kind == "choice":
                label = self.label or self.name
                return [f"unknown {label} {value!r}; use one of {', '.join(self.choices)}"]
            return [f"{name} must be {self.expected()}, got {value!r}"]
        return list(self.check(value)) if self.check is not None else []

    def _allows(self, value: Any) -> bool:  # noqa: PLR0911 - one answer per kind reads best
        kind = self.kind
        if kind == "choice":
            return isinstance(value, str) and value in self.choices
        if kind == "bool":
            return isinstance(value, bool)
        if kind == "text":
            return isinstance(value, str) and bool(value)
        if kind == "start":
            return (
                value in ("earliest", "latest")
                or isinstance(value, datetime)
                or (_is_int(value) and value >= 0)
            )
        if kind == "int" and not _is_int(value):
            return False
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
            return False  # nan and inf are never a duration, a rate or a count
        if self.positive and value <= 0:
            return False
        if self.minimum is not None and value < self.minimum:
            return False
        return self.maximum is None or value <= self.maximum


def option(
    default: Any = attrs.NOTHING,
    *,
    doc: str,
    kind: Kind,
    min: float | None = None,
    max: float | None = None,
    positive: bool = False,
    choices: Sequence[str] = (),
    label: str | None = None,
    required: bool = False,
    optional: bool = False,
    toml: str | Literal[False] | None = None,
    check: Check | None = None,
    factory: Callable[[], Any] | None = None,
    converter: Callable[[Any], Any] | None = None,
    strict: bool = False,
) -> Any:
    """Declare an option as an attrs field.

    Args:
        default: the default value; leave it out for an option that must be given.
        doc: one line saying what the option does (the README table shows it).
        kind: how the value is checked: ``int``, ``seconds``, ``rate``, ``number``,
            ``bool``, ``text``, ``choice``, ``start`` or ``custom``.
        min: smallest allowed value of a number.
        max: largest allowed value of a number; every duration and rate has one.
        positive: zero is refused.
        choices: the allowed values of a ``choice``.
        label: what a ``choice`` value is called in messages.
        required: a TOML table must give it even though the builder has a default.
        optional: ``None`` is allowed and means "off".
        toml: the TOML value type when the kind does not say it; ``False`` keeps
            the option out of TOML files.
        check: extra check returning messages, for ``custom`` options (patterns,
            handlers) and beyond the kind's own check.
        factory: makes the default, for mutable or composite defaults.
        converter: normalises the value on assignment (a list of patterns to a tuple).
        strict: check at construction and raise ``ValueError`` (for frozen values
            such as :class:`~reactor.supervision.strategy.Backoff`); otherwise the
            declaration is checked by ``Topology.validate()`` with everything else.

    Returns:
        An ``attrs.field`` carrying the option's schema in its metadata.
    """
    if kind in ("seconds", "rate"):
        assert max is not None, "every duration and rate option needs a documented maximum"
    # The name and the default are the field's: options_of() fills them in.
    spec = Option(
        name="",
        kind=kind,
        doc=doc,
        default=attrs.NOTHING,
        minimum=min,
        maximum=max,
        positive=positive,
        choices=tuple(choices),
        label=label,
        required=required,
        optional=optional,
        toml=None if toml is False else (toml or TOML_TYPES.get(kind)),
        check=check,
    )
    validator = _raise_problems if strict else None
    if factory is not None:
        return attrs.field(
            factory=factory, metadata={_KEY: spec}, converter=converter, validator=validator
        )
    return attrs.field(
        default=default, metadata={_KEY: spec}, converter=converter, validator=validator
    )


def seconds(default: float | None, doc: str, **bounds: Any) -> Any:
    """A duration in seconds; ``bounds`` as :func:`option` takes them (every duration has a max)."""
    return option(default, kind="seconds", doc=doc, **bounds)


def time_limit(doc: str) -> Any:
    """A time limit in seconds: off (None) by default, else more than 0 and at most a day."""
    return seconds(None, doc, positive=True, max=86_400, optional=True)


def count(default: int | None, doc: str, **bounds: Any) -> Any:
    """A positive whole number: a capacity, a batch or a number of attempts, members or looks."""
    return option(default, kind="int", positive=True, doc=doc, **bounds)


def string(default: Any = attrs.NOTHING, *, doc: str, **extra: Any) -> Any:
    """A value a TOML file writes as a string: a name, a URL, a topic or a ``module:attr``."""
    return option(default, kind="custom", toml="str", doc=doc, **extra)


def table(cls: Callable[[], Any], check: Check, doc: str) -> Any:
    """A frozen value such as a ``Retry``, a table of its own in TOML; ``None`` is its default."""
    return option(
        kind="custom",
        factory=cls,
        converter=lambda value: cls() if value is None else value,
        toml="table",
        check=check,
        doc=doc,
    )


def check_keywords(method: str, given: Iterable[str], allowed: Collection[str]) -> None:
    """Refuse a keyword of ``given`` that is not in ``allowed``, as Python would, with a hint.

    Raises:
        TypeError: ``method() got an unexpected keyword argument ...``, with the closest
            option and every one of ``allowed``.
    """
    for key in given:
        if key not in allowed:
            raise TypeError(
                f"{method}() got an unexpected keyword argument {key!r}"
                f"{did_you_mean(key, allowed)} (options: {', '.join(allowed)})"
            )


def options_of(cls: type) -> tuple[Option, ...]:
    """The options of an attrs class declared with :func:`option`, in field order."""
    return tuple(_option(field) for field in attrs.fields(cls) if _KEY in field.metadata)


def problems_of(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(option, message)`` for every option of ``value`` that is out of its bounds."""
    found = []
    for opt in options_of(type(value)):
        found += [(opt.name, text) for text in opt.problems(getattr(value, opt.name), prefix)]
    return found


# field -> its completed Option. Completing one costs an attrs.evolve, and every
# construction of a value with options validates each of its fields: a topology of
# 10,000 consumers would pay it hundreds of thousands of times. Keyed by the field's
# id, with the field kept beside it so a recycled id is never mistaken for it.
_COMPLETED: dict[int, tuple[attrs.Attribute[Any], Option]] = {}


def _option(field: attrs.Attribute[Any]) -> Option:
    cached = _COMPLETED.get(id(field))
    if cached is not None and cached[0] is field:
        return cached[1]
    default: Any = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        # An Option's default is only shown (docstrings, the README table), never
        # handed to a value, so one made here serves every reader.
        default = default.factory()
    spec: Option = field.metadata[_KEY]
    completed = attrs.evolve(spec, name=field.name, default=default)
    _COMPLETED[id(field)] = (field, completed)
    return completed


def _raise_problems(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    problems = _option(attribute).problems(value)
    if problems:
        raise ValueError("; ".join(problems))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{value:.0f}"
