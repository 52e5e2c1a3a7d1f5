"""What a saga declares, and how it is checked: :class:`SagaDecl` and its :class:`StepDecl`.

A saga is ordered steps on one channel, started by an event of topic
``start_on`` (or :meth:`reactor.System.start_saga`). Each step has an action and,
optionally, a compensation, each either

* a **command**: a topic. The saga publishes an event of that topic on its
  channel, with the saga's data, ``correlation_id`` = the instance id and ``key`` =
  the instance id (on the step's ``channel``, if given). A participant answers with
  an event on the saga's channel with the same correlation id (``event.reply(data)`` gives both): topic
  ``success`` (default ``<action>.reply``) completes the step and merges its data
  into the saga's, topic ``failure`` (default ``<action>.failed``) fails it, and
  no answer within ``timeout`` seconds fails it too. A compensation's answers are
  ``<compensation>.reply`` and ``<compensation>.failed``;
* a **function** ``f(data)``, run by the saga: returning completes it (a mapping
  returned is merged into the saga's data), raising fails it.

The options are declared once here, as for every declaration
(:func:`reactor.schema.option`): the builder, the TOML loader and the README's
option table derive from them. :func:`saga_problems` reports every problem of a
saga at once; :class:`~reactor.runtime.declarations.TopologyDecl` turns them into
its problems.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection
from typing import Any

import attrs

from reactor.errors import InvalidTopicError
from reactor.messages.topics import validate_topic
from reactor.schema import (
    Option,
    check_keywords,
    count,
    options_of,
    problems_of,
    string,
    table,
    time_limit,
)
from reactor.supervision.strategy import Retry
from reactor.text import did_you_mean

__all__ = ["SagaDecl", "StepDecl", "saga_consumer", "saga_problems", "saga_topic"]

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_NAME_RULE = "letters, digits, '_' or '-'"


def saga_consumer(saga: str) -> str:
    """The name (and group) of the consumer that runs ``saga`` on its channel."""
    return f"$saga.{saga}"


def saga_topic(saga: str, kind: str) -> str:
    """A topic of ``saga``'s own: ``timeout`` and ``retry`` wake it; ``undo`` names a
    function compensation in a dead letter."""
    return f"reactor.saga.{saga}.{kind}"


def _check_action(value: Any) -> list[str]:
    if callable(value):
        return []
    if not isinstance(value, str):
        return [f"must be a command topic or a function f(data), got {type(value).__name__}"]
    return _topic_problems(value)


def _check_topic(value: Any) -> list[str]:
    return _topic_problems(value) if isinstance(value, str) else [f"must be a topic, got {value!r}"]


def _topic_problems(value: str) -> list[str]:
    try:
        validate_topic(value)
    except InvalidTopicError as exc:
        return [str(exc)]
    if value.startswith("$"):
        return [f"topic {value!r}: topics starting with '$' are reactor's"]
    return []


def _check_retry(value: Any) -> list[str]:
    return [] if isinstance(value, Retry) else [f"must be a reactor.Retry, got {value!r}"]


def _step_call(doc: str, *, optional: bool = False) -> Any:
    """What a step runs: a command topic, or a function ``f(data)``; ``optional``: or None."""
    if optional:
        return string(None, optional=True, check=_check_action, doc=doc)
    return string(check=_check_action, doc=doc)


def _reply_topic(what: str) -> Any:
    """The topic of a command's reply that says how it went: ``what`` it does."""
    return string(None, optional=True, check=_check_topic, doc=f"reply topic that {what}")


@attrs.define(eq=False)
class StepDecl:
    """One declared step of a saga: an action, its compensation and their replies."""

    name: str
    action: str | Callable[[Any], Any] = _step_call(
        "a command topic sent on the saga's channel, or a function `f(data)` the saga runs"
    )
    compensation: str | Callable[[Any], Any] | None = _step_call(
        "undoes the action when a later step fails: a command topic or a function `f(data)`",
        optional=True,
    )
    timeout: float | None = time_limit(
        "seconds a command waits for its reply before the step (or compensation) fails"
    )
    success: str | None = _reply_topic("completes the action (default: `<action>.reply`)")
    failure: str | None = _reply_topic("fails the action (default: `<action>.failed`)")
    channel: str | None = string(
        None,
        optional=True,
        doc="channel its commands go to (default: the saga's); replies come back on the saga's",
    )

    @property
    def command(self) -> str | None:
        """The action's command topic; None when the action is a function."""
        return self.action if isinstance(self.action, str) else None

    @property
    def success_topic(self) -> str:
        return self.success or f"{self.action}.reply"

    @property
    def failure_topic(self) -> str:
        return self.failure or f"{self.action}.failed"


@attrs.define(eq=False)
class SagaDecl:
    """A declared saga: its channel, the topic that starts it, its steps in order.

    Build one with :meth:`reactor.Topology.saga`, then add steps with :meth:`step`.
    """

    name: str
    channel: str = string(doc="the channel its commands go to and its replies come back on")
    start_on: str = string(check=_check_topic, doc="topic of the events that start an instance")
    max_attempts: int = count(
        5, "attempts of a compensation before the saga ends `stuck` with a dead letter", max=1000
    )
    retry: Retry = table(
        Retry, _check_retry, "delay between attempts of a failed compensation: a `reactor.Retry`"
    )
    keep_finished: int = count(
        10_000,
        "finished (completed or compensated) instances kept; the oldest-started beyond it are "
        "deleted as instances finish",
        max=10_000_000,
    )
    steps: list[StepDecl] = attrs.field(factory=list)

    def step(
        self,
        name: str,
        *,
        action: str | Callable[[Any], Any],
        compensation: str | Callable[[Any], Any] | None = None,
        **options: Any,
    ) -> SagaDecl:
        """Add a step after the ones declared so far.

        Args:
            name: the step's name, unique in the saga.
            action: a command topic, or a function ``f(data)`` the saga runs.
            compensation: undoes the action: a command topic, a function, or None.
            **options: ``timeout``, ``success``, ``failure`` (see :class:`StepDecl`).

        Returns:
            This saga, to add the next step.

        Raises:
            TypeError: an option that steps do not have.
        """
        others = sorted({opt.name for opt in options_of(StepDecl)} - {"action", "compensation"})
        check_keywords("step", options, ["action", "compensation", *others])
        self.steps.append(StepDecl(name, action=action, compensation=compensation, **options))
        return self

    def patterns(self) -> tuple[str, ...]:
        """Every topic the saga's consumer takes from its channel: starts, replies, timers."""
        topics = [self.start_on, saga_topic(self.name, "timeout"), saga_topic(self.name, "retry")]
        for step in self.steps:
            if step.command is not None:
                topics += [step.success_topic, step.failure_topic]
            if isinstance(step.compensation, str):
                topics += [f"{step.compensation}.reply", f"{step.compensation}.failed"]
        return tuple(dict.fromkeys(topics))


def saga_options() -> tuple[Option, ...]:
    """The options of a saga, then those of a step, for the README's table."""
    return options_of(SagaDecl) + options_of(StepDecl)


def saga_problems(decl: SagaDecl, channels: Collection[str]) -> list[tuple[str | None, str]]:
    """Every problem of ``decl``, as ``(field, text)``; ``[]`` if it is valid.

    A step's field is ``steps.<step>.<option>`` (``steps.<step>`` for the step as a
    whole), so a TOML loader can find its line.
    """
    name = decl.name
    subject = f"saga {name!r}"
    found: list[tuple[str | None, str]] = []
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        found.append((None, f"{subject}: a saga name is one word of {_NAME_RULE}"))
    for opt in options_of(SagaDecl):
        found += [
            (opt.name, f"{subject}: {_named(opt.name, text)}")
            for text in opt.problems(getattr(decl, opt.name))
        ]
    if isinstance(decl.retry, Retry):
        found += [("retry", f"{subject}: {text}") for _, text in problems_of(decl.retry, "retry.")]
    if decl.channel not in channels:
        known = ", ".join(sorted(channels)) or "none declared"
        hint = did_you_mean(decl.channel, channels) if isinstance(decl.channel, str) else ""
        text = f"{subject}: unknown channel {decl.channel!r}{hint} (channels: {known})"
        found.append(("channel", text))
    if not decl.steps:
        found.append((None, f"{subject}: has no steps; add them with saga.step(name, action=...)"))
    seen: set[str] = set()
    for step in decl.steps:
        found += _step_problems(subject, step, seen)
        if step.channel is not None and step.channel not in channels:
            hint = did_you_mean(step.channel, channels) if isinstance(step.channel, str) else ""
            text = (
                f"{subject} step {step.name!r}: unknown channel {step.channel!r}{hint} "
                f"(channels: {', '.join(sorted(channels)) or 'none declared'})"
            )
            found.append((f"steps.{step.name}.channel", text))
    if not any(field is not None and field.startswith("steps.") for field, _ in found):
        found += _loop_problems(decl)
    return found


def _loop_problems(decl: SagaDecl) -> list[tuple[str | None, str]]:
    """A command whose topic the saga itself takes (a start or a reply topic): a loop."""
    taken = set(decl.patterns())
    found: list[tuple[str | None, str]] = []
    for step in decl.steps:
        for kind in ("action", "compensation"):
            topic = getattr(step, kind)
            if isinstance(topic, str) and topic in taken:
                text = (
                    f"saga {decl.name!r} step {step.name!r}: {kind} {topic!r} is also a topic "
                    "the saga takes (its start_on or a reply topic); give the command a topic "
                    "of its own"
                )
                found.append((f"steps.{step.name}.{kind}", text))
    return found


def _named(option: str, text: str) -> str:
    """``text`` about ``option``, starting with the option's name."""
    return text if text.startswith(option) else f"{option}: {text}"


def _step_problems(subject: str, step: StepDecl, seen: set[str]) -> list[tuple[str | None, str]]:
    where = f"steps.{step.name}"
    label = f"{subject} step {step.name!r}"
    found: list[tuple[str | None, str]] = []
    if not isinstance(step.name, str) or _NAME.fullmatch(step.name) is None:
        found.append((where, f"{label}: a step name is one word of {_NAME_RULE}"))
    elif step.name in seen:
        found.append((where, f"{label}: the name is already used by another step"))
    seen.add(step.name)
    for opt in options_of(StepDecl):
        value = getattr(step, opt.name)
        found += [
            (f"{where}.{opt.name}", f"{label}: {_named(opt.name, text)}")
            for text in opt.problems(value)
        ]
    for kind in ("action", "compensation"):
        function = getattr(step, kind)
        if callable(function) and inspect.iscoroutinefunction(function):
            text = f"{label}: {kind} is `async def`; the saga runs plain functions f(data)"
            found.append((f"{where}.{kind}", text))
    if step.command is None and (step.success is not None or step.failure is not None):
        field = "success" if step.success is not None else "failure"
        text = f"{label}: {field} is set but the action is a function (replies are for commands)"
        found.append((f"{where}.{field}", text))
    return found
