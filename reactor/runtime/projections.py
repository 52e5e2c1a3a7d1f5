"""Projections: read models folded from a channel's events (the query side of CQRS).

One concept, in one module: a projection's declaration (:class:`ProjectionDecl`,
checked like every other declaration), the runtime that folds events into its
state (:class:`Projection`) and what a read returns (:class:`ProjectionSnapshot`).

**Folding.** A projection is a consumer (same name, same group) of its channel
whose handler is ``state = apply(state, event)``. ``apply`` is given the state
frozen (:func:`~reactor.messages.freeze.freeze`), so it cannot change it in
place; its result is frozen and swapped in whole, so a read never sees half an
event. An ``apply`` that raises changes nothing: the event goes through the
failure rules of any consumer (retried after the ``retry`` delay, up to
``max_deliveries``, then dead-lettered) while the projection goes on with the
next events (later events of the same key wait behind it, as for any consumer).
So an event that failed may be folded after later ones of other keys.

**Positions.** Each event is folded at its position (:attr:`reactor.Delivery.position`):
the projection remembers the highest position it folded and the positions below
it still owed (failed, their retry to come), and skips anything else: an event
delivered again after a restart is never folded twice.

**Checkpoints** (``sqlite`` and ``redis``, through the channel's
:class:`~reactor.channels.backend.KeepsCheckpoints`): the position is written
with the state (and the owed positions) as one record, in one transaction of
the channel's file or one ``MULTI``/``EXEC`` of its Redis. A checkpoint is
written once ``checkpoint_every`` events were folded since the last one, or
at the first event folded ``checkpoint_s`` seconds after it, and when the
system stops. **Resuming:** at start the projection loads its checkpoint and
folds what the log holds beyond it (:class:`~reactor.channels.backend.ReadsLog`)
before any consumer runs, so the events folded after the checkpoint but before
a crash are folded again exactly once, whatever their group had acked; the
group's redeliveries of them are then skipped by position. An event whose
``apply`` raises during this catch-up is left to its group's redelivery (and
the failure rules), if the group still owes it; if the group had settled it
already it is logged and not folded.

**Rebuilding** (:meth:`reactor.System.rebuild_projection`) folds the log again
from its start, with the projection's current ``apply``, up to the position the
projection has reached, while its consumer waits; the result replaces the
state and is checkpointed. It needs a log: on ``memory`` it is an error. Events
retention deleted are not in the log any more, so a rebuild cannot fold them.
A rebuild (and a catch-up) folds an event id once, so an event a redrive
appended again is not folded twice.

On ``memory`` the projection lives in the process: it starts from ``initial``
at every start.

A checkpointed state must have a JSON form (tagged as
:class:`~reactor.messages.codecs.JsonCodec` writes event data: mappings, tuples,
sets, numbers, text, datetimes, ...). A state that has none is logged and not
checkpointed.

**Several processes** (``reactor worker``): run a projection in one process only
(``--only NAME``): the members of its group share the events.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from reactor.channels.backend import Checkpoint, KeepsCheckpoints, ReadsLog
from reactor.errors import ImmutableMessageError, NotDurableError
from reactor.messages.freeze import FrozenDict, freeze
from reactor.messages.jsonvalues import Unencodable, from_json, to_json
from reactor.messages.topics import TopicPattern
from reactor.messages.upcasting import Upcasters
from reactor.runtime.declarations import (
    ConsumerDecl,
    Problem,
    builder_options,
    patterns_of,
    patterns_option,
)
from reactor.runtime.handling import current_delivery
from reactor.schema import count, option, problems_of, seconds, string, table
from reactor.supervision.strategy import Retry
from reactor.text import did_you_mean

if TYPE_CHECKING:
    from reactor.channels.backend import Channel
    from reactor.clock import Clock
    from reactor.messages.event import Event
    from reactor.runtime.declarations import TopologyDecl

__all__ = ["Projection", "ProjectionDecl", "ProjectionSnapshot"]

logger = logging.getLogger("reactor")

# Events read from a log at a time by a catch-up or a rebuild.
_PAGE = 500
# Folded positions a projection without checkpoints remembers, to skip a redelivery.
_WINDOW = 100_000
# How long a stop waits for a fold in progress before it writes the last checkpoint.
_CLOSE_WAIT_S = 2.0

Apply = Callable[[Any, "Event"], Any]


def _check_apply(apply: Any) -> list[str]:
    if apply is None:
        return ["has no apply function; pass apply= or use it as a decorator"]
    if not callable(apply):
        return [f"apply must be a function apply(state, event), got {type(apply).__name__}"]
    return []


def _check_initial(initial: Any) -> list[str]:
    try:
        freeze(initial, "initial")
    except ImmutableMessageError as exc:
        return [str(exc)]
    return []


def _check_retry(retry: Any) -> list[str]:
    if isinstance(retry, Retry):
        return [text for _, text in problems_of(retry, "retry.")]
    return [f"retry must be a reactor.Retry, got {type(retry).__name__}"]


@attrs.define(eq=False)
class ProjectionDecl:
    """A declared projection: ``apply(state, event)`` folded over a channel's events."""

    name: str
    channel: str = string(doc="the channel whose events it folds")
    apply: Any = option(
        None,
        kind="custom",
        toml="str",
        required=True,
        check=_check_apply,
        doc="`apply(state, event) -> new state`; it must not change `state` (it is frozen)",
    )
    pattern: str | tuple[str, ...] = patterns_option("topic pattern(s) of the events it folds")
    initial: Any = option(
        kind="custom",
        toml="any",
        factory=FrozenDict,
        check=_check_initial,
        doc="the state before the first event (frozen; JSON-able to be checkpointed)",
    )
    checkpoint_every: int = count(100, "events folded between two checkpoints (durable logs)")
    checkpoint_s: float = seconds(
        1.0,
        "seconds after a checkpoint when the next fold writes one, however few events",
        positive=True,
        max=3600,
    )
    max_deliveries: int = count(5, "attempts before an event `apply` fails on is dead-lettered")
    retry: Retry = table(
        Retry, _check_retry, "when an event `apply` failed on is tried again: a `reactor.Retry`"
    )

    @property
    def patterns(self) -> tuple[str, ...]:
        return patterns_of(self.pattern)

    def consumer(self, handler: Any) -> ConsumerDecl:
        """The consumer that feeds this projection: its name and group, ``handler`` folding."""
        return ConsumerDecl(
            name=self.name,
            channel=self.channel,
            pattern=self.pattern,
            handler=handler,
            max_deliveries=self.max_deliveries,
            retry=self.retry,
        )

    def problems(self, topology: TopologyDecl, taken: dict[str, str]) -> list[Problem]:
        """What is wrong with this projection in ``topology``; ``taken``: names used so far."""

        def problem(field: str | None, text: str) -> Problem:
            return Problem("projection", self.name, field, f"projection {self.name!r}: {text}")

        found = []
        if not isinstance(self.name, str) or not self.name or self.name.startswith("$"):
            found.append(problem(None, "a name must be a non-empty string not starting with '$'"))
        elif self.name in taken:
            found.append(problem(None, f"the name is already used by a {taken[self.name]}"))
        else:
            taken[self.name] = "projection"
        if self.channel not in topology.channels:
            names = sorted(topology.channels)
            hint = did_you_mean(self.channel, names) if isinstance(self.channel, str) else ""
            found.append(
                Problem(
                    "projection",
                    self.name,
                    "channel",
                    f"projection {self.name!r}: unknown channel {self.channel!r}{hint} "
                    f"(channels: {', '.join(names) or 'none declared'})",
                    missing_channel=self.channel if isinstance(self.channel, str) else None,
                )
            )
        for opt in builder_options(ProjectionDecl).values():
            for message in opt.problems(getattr(self, opt.name)):
                found.append(problem(opt.name, message))
        return found


@attrs.frozen(slots=True)
class ProjectionSnapshot:
    """A projection's read model at one moment: what :meth:`reactor.System.projection` returns.

    Attributes:
        name: the projection.
        channel: the channel it folds.
        state: the read model (frozen: share it with any thread).
        position: the highest position folded into ``state`` (0 before the first event).
        folded: events folded since the system started (a catch-up's included).
        lag: events the channel still owes the projection (its group's backlog and
            in-flight events).
    """

    name: str
    channel: str
    state: Any
    position: int
    folded: int
    lag: int


@attrs.frozen(slots=True)
class _View:
    """What reads see, swapped whole under the fold lock and read without it."""

    state: Any
    position: int
    folded: int


class Projection:
    """One projection of a running system: folds events, checkpoints, catches up, rebuilds.

    What it has folded is a watermark and a set: ``mark``, at or below which every
    event of the channel was folded (or given up: dead-lettered), and ``done``, the
    positions above it that were. A delivery at a position in either is skipped.
    A checkpoint moves ``mark`` up to the group's settled position (everything
    acked was folded before its ack) and keeps in ``done`` only what is above it;
    on ``memory`` (no checkpoints) ``done`` keeps the last ``_WINDOW`` positions,
    as an idempotent consumer's dedup window does.

    Thread-safety: :meth:`handle` runs in the projection's consumer thread;
    :meth:`view` may be called from any thread without waiting (it reads one
    frozen value); :meth:`rebuild` and :meth:`close` may be called from any
    thread and wait for a fold in progress.
    """

    def __init__(self, decl: ProjectionDecl, clock: Clock) -> None:
        self.decl = decl
        self.name = decl.name
        self._apply: Apply = decl.apply
        self._initial = freeze(decl.initial, "initial")
        self._patterns = tuple(TopicPattern.compile(p) for p in decl.patterns)
        self._clock = clock
        self._lock = threading.Lock()  # one fold, catch-up, rebuild or checkpoint at a time
        self._view = _View(self._initial, 0, 0)
        self._mark = 0
        self._done: set[int] = set()
        self._order: collections.deque[int] = collections.deque()  # memory: _done, oldest first
        self._store: Any = None  # the channel, if it keeps checkpoints and a log
        self._upcasters: Upcasters | None = None  # the channel's, for what is read from its log
        self._unsaved = 0  # events folded since the last checkpoint
        self._saved_at = clock.monotonic()
        self.failed = 0  # apply calls that raised
        self.checkpoints = 0  # checkpoints written

    # -- reading -------------------------------------------------------------------

    def view(self) -> tuple[Any, int, int]:
        """``(state, position, folded)`` as of the last fold; never waits."""
        view = self._view
        return view.state, view.position, view.folded

    # -- starting and stopping -----------------------------------------------------

    def attach(self, channel: Channel, upcasters: Upcasters | None = None) -> None:
        """Resume from the channel's checkpoint and fold the log beyond it; before any consumer runs.

        A channel without a log (``memory``) leaves the projection at ``initial``.
        ``upcasters`` (the channel's) bring what the log holds to the current version
        before it is folded, as the projection's consumer does for what it is delivered.
        """
        self._upcasters = upcasters
        if not (isinstance(channel, KeepsCheckpoints) and isinstance(channel, ReadsLog)):
            return
        self._store = channel
        with self._lock:
            checkpoint = channel.load_checkpoint(self.name)
            if checkpoint is not None:
                state = freeze(from_json(json.loads(checkpoint.state), "state"), "state")
                top = max((checkpoint.position, *checkpoint.above))
                self._view = _View(state, top, 0)
                self._mark = checkpoint.position
                self._done = set(checkpoint.above)
            if self._fold_log(self._mark, channel.log_head(), self._record, "catching up"):
                self._save()
        logger.debug("projection %r resumed at position %d", self.name, self._view.position)

    def close(self) -> None:
        """Write the last checkpoint (durable logs), once the consumer has stopped."""
        if self._store is None or not self._lock.acquire(timeout=_CLOSE_WAIT_S):
            return
        try:
            if self._unsaved:
                self._save()
        finally:
            self._lock.release()

    # -- folding -------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """The consumer's handler: fold ``event`` at its position unless it was folded already.

        Raises:
            Exception: whatever ``apply`` raised (the event is retried or dead-lettered);
                the state is unchanged.
        """
        delivery = current_delivery()
        position = delivery.position
        with self._lock:
            if position <= self._mark or position in self._done:
                return  # folded before a restart, by the catch-up, or a redelivery
            view = self._view
            try:
                state = freeze(self._apply(view.state, event), "state")
            except BaseException:
                self.failed += 1
                if delivery.last_attempt:
                    self._record(position)  # dead-lettered: given up, the mark may pass it
                raise
            self._record(position)
            self._view = _View(state, max(view.position, position), view.folded + 1)
            self._unsaved += 1
            if self._store is not None and (
                self._unsaved >= self.decl.checkpoint_every
                or self._clock.monotonic() - self._saved_at >= self.decl.checkpoint_s
            ):
                self._save()

    def _record(self, position: int) -> None:
        """Remember that ``position`` is folded (or given up); under the lock."""
        self._done.add(position)
        if self._store is None:
            order = self._order
            order.append(position)
            if len(order) > _WINDOW:
                self._done.discard(order.popleft())

    def rebuild(self) -> tuple[Any, int, int]:
        """Fold the log again from its start, as far as the projection has folded; replace the state.

        Returns:
            ``(state, position, folded)`` after the rebuild.

        Raises:
            NotDurableError: the channel keeps no log (``memory``).
        """
        if self._store is None:
            raise NotDurableError(
                f"projection {self.name!r} folds channel {self.decl.channel!r}, which keeps no "
                "log to rebuild it from; declare the channel with a durable backend such as "
                "backend='sqlite:///path.db'"
            )
        with self._lock:
            live = self._view
            mark, done = self._mark, self._done
            # Only what the live state holds: not an event still to be retried.
            self._mark, self._done = 0, set()
            self._view = _View(self._initial, 0, live.folded)
            try:
                self._fold_log(
                    0, live.position, _nothing, "rebuilding", lambda p: p <= mark or p in done
                )
            finally:
                self._mark, self._done = mark, done
            self._view = attrs.evolve(self._view, position=live.position)
            self._save()
            return self.view()

    def _fold_log(
        self,
        after: int,
        upto: int,
        record: Callable[[int], None],
        doing: str,
        wanted: Callable[[int], bool] | None = None,
    ) -> int:
        """Fold the log's events in ``(after, upto]`` not folded yet (and ``wanted``); under the lock.

        Returns:
            How many were folded.
        """
        channel = self._store
        seen: set[str] = set()  # a redrive appends an event again under the same id
        folded = 0
        while after < upto:
            page = channel.read_log(self.name, after, _PAGE)
            if not page:
                break
            for position, event in page:
                if position > upto:
                    return folded
                after = position
                if event is None or event.id in seen or position in self._done:
                    continue
                if (wanted is not None and not wanted(position)) or not any(
                    pattern.matches(event.topic) for pattern in self._patterns
                ):
                    continue
                view = self._view
                upcasters = self._upcasters
                try:
                    current = event if upcasters is None else upcasters.upcast(event)
                    state = freeze(self._apply(view.state, current), "state")
                except Exception as exc:
                    self.failed += 1
                    logger.warning(
                        "projection %r: apply raised on event %s (%s) at position %d while %s "
                        "the log: %s: %s; it is folded if its group delivers it again",
                        self.name,
                        event.id,
                        event.topic,
                        position,
                        doing,
                        type(exc).__name__,
                        exc,
                    )
                    continue
                seen.add(event.id)
                record(position)
                self._view = _View(state, max(view.position, position), view.folded + 1)
                folded += 1
        return folded

    def _save(self) -> None:
        """Checkpoint the state with its position; under the lock."""
        store = self._store
        view = self._view
        self._saved_at = self._clock.monotonic()
        try:
            state = json.dumps(to_json(view.state, True), separators=(",", ":"))
        except Unencodable as exc:
            logger.error(
                "projection %r: its state has no JSON form (%s); it is not checkpointed, and a "
                "restart folds the log again from the last checkpoint",
                self.name,
                exc,
            )
            return
        try:
            # Everything the group settled was folded before its ack (or given up).
            mark = max(self._mark, min(store.settled(self.name), view.position))
            if mark > self._mark:
                self._mark = mark
                self._done = {position for position in self._done if position > mark}
            saved = store.save_checkpoint(
                self.name, Checkpoint(mark, state, tuple(sorted(self._done)))
            )
        except Exception as exc:  # the state is folded; the next checkpoint writes it
            logger.warning("projection %r: checkpoint not written: %s", self.name, exc)
            return
        if saved:
            self._unsaved = 0
            self.checkpoints += 1


def _nothing(position: int) -> None:
    """A rebuild keeps the positions folded as they were: it records none."""
