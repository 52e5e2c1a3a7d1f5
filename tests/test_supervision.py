"""Supervision with OTP semantics, proved on small test actors.

Every test drives a :class:`Supervisor` directly, on a :class:`FakeClock`, with
``Worker`` children that record their ``on_start`` / ``on_stop`` calls (with the
incarnation number) in one ordered :class:`Journal`. Time only moves when a test
says so, so restart intensity and backoff are exact and nothing sleeps.

The expectations follow Erlang/OTP's ``supervisor`` module:

* ``permanent`` children are always restarted, ``transient`` ones only after an
  abnormal exit, ``temporary`` ones never, not even when a sibling's restart
  sweeps them away (they are stopped and forgotten);
* ``one_for_all`` stops the other children in reverse start order, then starts
  every restartable child in start order; ``rest_for_one`` does the same for the
  children started after the one that exited;
* every restart counts toward the intensity; past ``max_restarts`` within
  ``within_s`` the supervisor stops its children in reverse start order and fails
  to its parent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pykka
import pytest

from reactor.actors.address import Address
from reactor.actors.base import ActorContext, ReactorActor
from reactor.errors import SupervisorEscalation
from reactor.messages import lifecycle
from reactor.messages.event import Event
from reactor.supervision.strategy import (
    Backoff,
    OneForAll,
    OneForOne,
    RestartType,
    RestForOne,
    Strategy,
)
from reactor.supervision.supervisor import ChildSpec, StopChildren, Supervisor, SupervisorConfig
from reactor.testing import FakeClock, wait_for

# Restarts in these tests are immediate unless a test is about backoff.
NO_BACKOFF = Backoff(min_s=0, max_s=0, jitter=0)
TIMEOUT = 5.0

Entry = tuple[str, str, int]  # ("start" | "stop", child name, incarnation)


@attrs.frozen
class Raise:
    """Tell a Worker to raise this exception from its handler."""

    exception: BaseException


class Journal:
    """What every Worker did, in the order it happened, plus every incarnation made.

    Thread-safety: workers append from their own threads under a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[Entry] = []
        self.actors: dict[tuple[str, int], Worker] = {}
        # Every Worker ever made: two live actors with one name and number must show.
        self.every: list[Worker] = []

    def record(self, what: str, name: str, incarnation: int) -> None:
        with self._lock:
            self.entries.append((what, name, incarnation))

    def register(self, worker: Worker) -> None:
        with self._lock:
            self.actors[(worker.actor_address.name, worker.actor_incarnation)] = worker
            self.every.append(worker)

    def snapshot(self) -> list[Entry]:
        with self._lock:
            return list(self.entries)

    def since(self, mark: int) -> list[Entry]:
        with self._lock:
            return self.entries[mark:]

    def mark(self) -> int:
        with self._lock:
            return len(self.entries)

    def actor(self, name: str, incarnation: int) -> Worker:
        worker: Worker = wait_for(
            lambda: self.actors.get((name, incarnation)),
            TIMEOUT,
            message=f"{name}#{incarnation} never started",
        )
        return worker

    def live(self) -> dict[str, list[int]]:
        """Incarnations whose thread is still running, per child name."""
        with self._lock:
            workers = list(self.every)
        alive: dict[str, list[int]] = {}
        for worker in workers:
            if worker.actor_thread is not None and worker.actor_thread.is_alive():
                alive.setdefault(worker.name, []).append(worker.actor_incarnation)
        return {name: sorted(incarnations) for name, incarnations in sorted(alive.items())}


Hook = Callable[[str, int], bool]


def never(name: str, incarnation: int) -> bool:
    return False


class Worker(ReactorActor):
    """A child that records its lifecycle and does what its messages say.

    ``"crash"`` raises, ``"exit"`` stops normally, ``"ping"`` answers with
    (name, incarnation), :class:`Raise` raises any exception, even a BaseException.
    """

    def __init__(
        self,
        context: ActorContext,
        journal: Journal,
        fail_start: Hook = never,
        fail_stop: Hook = never,
    ) -> None:
        super().__init__(context)
        self.journal = journal
        self.fail_start = fail_start
        self.fail_stop = fail_stop
        self.handled: list[Any] = []
        journal.register(self)

    @property
    def name(self) -> str:
        return self.actor_address.name

    def on_start(self) -> None:
        self.journal.record("start", self.name, self.actor_incarnation)
        if self.fail_start(self.name, self.actor_incarnation):
            raise RuntimeError(
                f"{self.name}#{self.actor_incarnation} failed in on_start on purpose"
            )

    def on_stop(self) -> None:
        self.journal.record("stop", self.name, self.actor_incarnation)
        if self.fail_stop(self.name, self.actor_incarnation):
            raise RuntimeError(f"{self.name}#{self.actor_incarnation} failed in on_stop on purpose")

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.name}#{self.actor_incarnation} crashed on purpose")
        if message == "exit":
            self.request_stop()  # a normal exit: on_stop runs, the parent hears "normal"
            return None
        if message == "ping":
            return (self.name, self.actor_incarnation)
        if isinstance(message, Raise):
            raise message.exception
        self.handled.append(message)
        return None


class Tree:
    """Builds supervisors of Workers on one fake clock and stops them all afterwards."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.journal = Journal()
        self.events: list[Event] = []
        self._events_lock = threading.Lock()
        self.escalations: list[SupervisorEscalation] = []
        self.escalated = threading.Event()
        self.addresses: dict[str, Address] = {}
        self._roots: list[Supervisor] = []

    # -- building --------------------------------------------------------------------

    def worker(
        self,
        name: str,
        restart: RestartType = "permanent",
        *,
        fail_start: Hook = never,
        fail_stop: Hook = never,
        shutdown_s: float = TIMEOUT,
    ) -> ChildSpec:
        # One address per name for the whole test: it outlives every incarnation,
        # and every incarnation of the supervisor above it.
        address = self.addresses.setdefault(name, Address(name))
        journal = self.journal
        return ChildSpec(
            name,
            start=lambda ctx: Worker.spawn(ctx, journal, fail_start, fail_stop),
            restart=restart,
            address=address,
            shutdown_s=shutdown_s,
        )

    def config(self, name: str, strategy: Strategy, children: list[ChildSpec]) -> SupervisorConfig:
        return SupervisorConfig(
            name,
            strategy,
            tuple(children),
            publish_system=self._publish,
            on_escalate=self._on_escalate,
            seed=7,
        )

    def nested(
        self,
        name: str,
        strategy: Strategy,
        children: list[ChildSpec],
        restart: RestartType = "permanent",
    ) -> ChildSpec:
        config = self.config(name, strategy, children)
        return ChildSpec(
            name,
            start=lambda ctx: Supervisor.spawn(ctx, config),
            restart=restart,
            kind="supervisor",
            address=self.addresses.setdefault(name, Address(name)),
            shutdown_s=30.0,
        )

    def start(self, strategy: Strategy, children: list[ChildSpec], name: str = "sup") -> Supervisor:
        context = ActorContext(Address(name), self.clock)
        sup = Supervisor.spawn(context, self.config(name, strategy, children))
        self._roots.append(sup)
        sup.actor_started.get(timeout=TIMEOUT)
        return sup

    # -- observing -------------------------------------------------------------------

    def _publish(self, event: Event) -> None:
        with self._events_lock:
            self.events.append(event)

    def _on_escalate(self, escalation: SupervisorEscalation) -> None:
        self.escalations.append(escalation)
        self.escalated.set()

    def lifecycle(self, topic: str, actor: str | None = None) -> list[dict[str, Any]]:
        with self._events_lock:
            events = list(self.events)
        return [
            dict(e.data)
            for e in events
            if e.topic == topic and (actor is None or e.data["actor"] == actor)
        ]

    def tell(self, name: str, message: Any) -> None:
        self.addresses[name].tell(message)

    def close(self) -> None:
        for sup in reversed(self._roots):
            sup.request_stop()
            assert sup.join(30), f"supervisor {sup.actor_address.name} did not stop"


@pytest.fixture
def tree() -> Iterator[Tree]:
    built = Tree()
    yield built
    built.close()


def settle(sup: Supervisor, *exited: ReactorActor) -> None:
    """Wait until ``exited`` have ended and ``sup`` has handled all they told it.

    An incarnation's thread ends right after it told its parent, so joining it
    puts the report in the supervisor's mailbox; an ask queued behind the report
    returns once the supervisor has handled it (an empty StopChildren does nothing).
    """
    for actor in exited:
        assert actor.join(TIMEOUT), f"{actor.actor_address.name} did not exit"
    sup.actor_address.ask(StopChildren(frozenset()), timeout=TIMEOUT)


def exit_child(tree: Tree, sup: Supervisor, name: str, incarnation: int, how: str) -> None:
    actor = tree.journal.actor(name, incarnation)
    tree.tell(name, how)
    settle(sup, actor)


# -- 1. strategy x restart type x exit kind ---------------------------------------------

STRATEGIES: dict[str, Strategy] = {
    "one_for_one": OneForOne(backoff=NO_BACKOFF),
    "one_for_all": OneForAll(backoff=NO_BACKOFF),
    "rest_for_one": RestForOne(backoff=NO_BACKOFF),
}


def expected_after_b_exits(
    strategy: str, b_type: RestartType, exit_kind: str, sibling_type: RestartType
) -> list[Entry]:
    """What OTP does when child b (of a, b, c) exits; a and c share ``sibling_type``."""
    entries: list[Entry] = []
    if exit_kind == "exit":
        entries.append(("stop", "b", 1))  # b's own on_stop, before it reports
    restarts = b_type == "permanent" or (b_type == "transient" and exit_kind == "crash")
    if not restarts:
        return entries
    # The siblings to sweep are stopped in reverse start order...
    swept = {"one_for_one": [], "rest_for_one": ["c"], "one_for_all": ["c", "a"]}[strategy]
    entries += [("stop", name, 1) for name in swept]
    # ...then the group starts in start order, without the temporary siblings.
    group = sorted([*swept, "b"])
    entries += [("start", name, 2) for name in group if name == "b" or sibling_type != "temporary"]
    return entries


@pytest.mark.parametrize("sibling_type", ["permanent", "transient", "temporary"])
@pytest.mark.parametrize("exit_kind", ["crash", "exit"])
@pytest.mark.parametrize("b_type", ["permanent", "transient", "temporary"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_strategy_restart_type_exit_kind(
    tree: Tree, strategy: str, b_type: RestartType, exit_kind: str, sibling_type: RestartType
) -> None:
    specs = [
        tree.worker("a", sibling_type),
        tree.worker("b", b_type),
        tree.worker("c", sibling_type),
    ]
    sup = tree.start(STRATEGIES[strategy], specs)
    assert tree.journal.snapshot() == [("start", "a", 1), ("start", "b", 1), ("start", "c", 1)]
    mark = tree.journal.mark()

    exit_child(tree, sup, "b", 1, exit_kind)

    expected = expected_after_b_exits(strategy, b_type, exit_kind, sibling_type)
    assert tree.journal.since(mark) == expected
    # Exactly one live incarnation of each child that should be running, none of the others.
    started = {name: inc for what, name, inc in expected if what == "start"}
    stopped = {name for what, name, _ in expected if what == "stop"} | (
        {"b"} if exit_kind == "crash" else set()
    )
    live = {
        name: [started.get(name, 1)] for name in "abc" if name in started or name not in stopped
    }
    assert tree.journal.live() == live
    # A restarted child answers on its old address; a swept temporary child is gone for good.
    for name, (incarnation,) in live.items():
        assert tree.addresses[name].ask("ping", timeout=TIMEOUT) == (name, incarnation)
    # One restarted event, for b, naming the group that restarts with it.
    restarted = [(e["actor"], e["group"]) for e in tree.lifecycle(lifecycle.ACTOR_RESTARTED)]
    assert restarted == ([("b", tuple(sorted(started)))] if "b" in started else [])
    assert {spec.name: spec.counters.restarts for spec in specs} == {
        name: int(name in started) for name in "abc"
    }


def test_temporary_sibling_swept_twice_is_never_restarted(tree: Tree) -> None:
    # After a temporary sibling was swept away, later sweeps must not revive it either.
    sup = tree.start(
        OneForAll(backoff=NO_BACKOFF),
        [tree.worker("a"), tree.worker("t", "temporary"), tree.worker("c")],
    )
    exit_child(tree, sup, "a", 1, "crash")
    exit_child(tree, sup, "c", 2, "crash")
    assert tree.journal.live() == {"a": [3], "c": [3]}
    assert [e for e in tree.journal.snapshot() if e[1] == "t"] == [
        ("start", "t", 1),
        ("stop", "t", 1),
    ]


# -- 2. restart intensity and escalation -----------------------------------------------


def test_fourth_crash_within_window_escalates_and_stops_children_in_reverse(tree: Tree) -> None:
    inner = tree.nested(
        "inner",
        OneForOne(max_restarts=3, within_s=5, backoff=NO_BACKOFF),
        [tree.worker("a"), tree.worker("b"), tree.worker("c"), tree.worker("d")],
    )
    top = tree.start(OneForOne(max_restarts=10, backoff=NO_BACKOFF), [inner], name="top")
    inner_actor = _supervisor_actor(top, "inner")
    for incarnation in (1, 2, 3):
        exit_child(tree, inner_actor, "b", incarnation, "crash")
        tree.clock.advance(1.0)  # 3 crashes in 2 s: within the intensity
    assert tree.lifecycle(lifecycle.SUPERVISOR_ESCALATED) == []
    mark = tree.journal.mark()

    tree.tell("b", "crash")  # the 4th inside 5 s: inner gives up
    assert tree.journal.actor("b", 4).join(TIMEOUT)
    settle(top, inner_actor)
    settle(_supervisor_actor(top, "inner"))

    # inner stopped d, c, a (b was already dead) before it failed; then top, seeing
    # inner fail, restarted it, which started a, b, c, d afresh.
    assert tree.journal.since(mark) == [
        ("stop", "d", 1),
        ("stop", "c", 1),
        ("stop", "a", 1),
        ("start", "a", 1),
        ("start", "b", 1),
        ("start", "c", 1),
        ("start", "d", 1),
    ]
    (escalated,) = tree.lifecycle(lifecycle.SUPERVISOR_ESCALATED)
    assert escalated["actor"] == "inner"
    assert escalated["chain"] == ("inner",)
    assert escalated["error_type"] == "RuntimeError"
    failed = tree.lifecycle(lifecycle.ACTOR_FAILED, "inner")
    assert [f["error_type"] for f in failed] == ["SupervisorEscalation"]
    # The restarted subtree runs exactly one incarnation of each child.
    assert tree.journal.live() == {"a": [1], "b": [1], "c": [1], "d": [1]}
    assert not tree.escalations  # top absorbed it


def _supervisor_actor(parent: Supervisor, name: str) -> Supervisor:
    # Test-only peek at the parent's child table (read once the parent is settled),
    # to join a nested supervisor's thread or send it a barrier.
    (child,) = [c for c in parent.children if c.spec.name == name]
    actor = child.actor
    assert isinstance(actor, Supervisor)
    return actor


def test_same_crashes_spread_over_20s_do_not_escalate(tree: Tree) -> None:
    sup = tree.start(
        OneForOne(max_restarts=3, within_s=5, backoff=NO_BACKOFF),
        [tree.worker("a"), tree.worker("b"), tree.worker("c")],
    )
    for incarnation in (1, 2, 3, 4):
        exit_child(tree, sup, "b", incarnation, "crash")
        tree.clock.advance(20 / 3)  # 4 crashes over 20 s: never 4 in one 5 s window
    assert not tree.escalations
    assert tree.lifecycle(lifecycle.SUPERVISOR_ESCALATED) == []
    assert tree.journal.live() == {"a": [1], "b": [5], "c": [1]}


def test_intensity_window_slides(tree: Tree) -> None:
    sup = tree.start(OneForOne(max_restarts=3, within_s=5, backoff=NO_BACKOFF), [tree.worker("b")])
    # Crashes at t = 0, 1, 2, 5.5, 6.5: never more than 3 within 5 s (t=0 and t=1 age out).
    for incarnation, step in enumerate((1.0, 1.0, 3.5, 1.0, 0.1), start=1):
        exit_child(tree, sup, "b", incarnation, "crash")
        tree.clock.advance(step)
    assert not tree.escalations
    # t = 6.6: 2, 5.5, 6.5 and 6.6 are 4 restarts within 5 s.
    tree.tell("b", "crash")
    assert tree.escalated.wait(TIMEOUT)
    assert sup.join(TIMEOUT)
    (escalation,) = tree.escalations
    assert escalation.chain == ("sup",)
    assert isinstance(escalation.reason, RuntimeError)


def test_escalation_climbs_two_levels_to_the_root(tree: Tree) -> None:
    leaf = tree.nested(
        "leaf",
        OneForOne(max_restarts=3, within_s=5, backoff=NO_BACKOFF),
        [tree.worker("x"), tree.worker("y")],
    )
    mid = tree.nested(
        "mid", RestForOne(max_restarts=0, backoff=NO_BACKOFF), [tree.worker("m"), leaf]
    )
    root = tree.start(
        OneForAll(max_restarts=0, backoff=NO_BACKOFF), [tree.worker("r"), mid], name="root"
    )
    for incarnation in (1, 2, 3, 4):
        tree.tell("y", "crash")
        if incarnation < 4:
            tree.journal.actor("y", incarnation + 1)

    assert tree.escalated.wait(TIMEOUT)
    assert root.join(TIMEOUT)
    (escalation,) = tree.escalations
    assert escalation.chain == ("leaf", "mid", "root")
    assert escalation.supervisor == "root"
    assert isinstance(escalation.reason, RuntimeError)
    assert "y#4 crashed on purpose" in str(escalation.reason)
    # Each level stopped what it held, innermost first, each in reverse start order.
    stops = [(name, inc) for what, name, inc in tree.journal.snapshot() if what == "stop"]
    assert stops == [("x", 1), ("m", 1), ("r", 1)]
    assert tree.journal.live() == {}
    chains = [e["chain"] for e in tree.lifecycle(lifecycle.SUPERVISOR_ESCALATED)]
    assert chains == [("leaf",), ("leaf", "mid"), ("leaf", "mid", "root")]


def test_repeated_on_start_failure_escalates(tree: Tree) -> None:
    # b starts once, then every restart fails in on_start: each failure counts as a crash.
    sup = tree.start(
        OneForOne(max_restarts=3, within_s=5, backoff=NO_BACKOFF),
        [
            tree.worker("a"),
            tree.worker("b", fail_start=lambda name, inc: inc > 1),
            tree.worker("c"),
        ],
    )
    tree.tell("b", "crash")
    assert tree.escalated.wait(TIMEOUT)
    assert sup.join(TIMEOUT)
    starts = [inc for what, name, inc in tree.journal.snapshot() if what == "start" and name == "b"]
    assert starts == [1, 2, 3, 4]  # the crash, then 3 failed restarts, then one too many
    stops = [name for what, name, _ in tree.journal.snapshot() if what == "stop"]
    assert stops == ["c", "a"]
    (escalation,) = tree.escalations
    assert "failed in on_start" in str(escalation.reason)
    failed = tree.lifecycle(lifecycle.ACTOR_FAILED, "b")
    assert len(failed) == 4


def test_failed_initial_start_delays_later_children_until_its_restart(tree: Tree) -> None:
    # A child whose first on_start fails is restarted; the children after it start
    # after it, in order, never before.
    sup = tree.start(
        OneForOne(backoff=NO_BACKOFF),
        [
            tree.worker("a"),
            tree.worker("b", fail_start=lambda name, inc: inc == 1),
            tree.worker("c"),
        ],
    )
    settle(sup)
    assert tree.journal.snapshot() == [
        ("start", "a", 1),
        ("start", "b", 1),
        ("start", "b", 2),
        ("start", "c", 1),
    ]
    assert tree.journal.live() == {"a": [1], "b": [2], "c": [1]}


def test_temporary_child_failing_its_first_start_does_not_block_the_others(tree: Tree) -> None:
    sup = tree.start(
        OneForOne(backoff=NO_BACKOFF),
        [
            tree.worker("a"),
            tree.worker("t", "temporary", fail_start=lambda n, i: True),
            tree.worker("c"),
        ],
    )
    settle(sup)
    assert tree.journal.live() == {"a": [1], "c": [1]}
    assert tree.addresses["c"].ask("ping", timeout=TIMEOUT) == ("c", 1)


# -- 3. backoff --------------------------------------------------------------------------

BACKOFF = Backoff(min_s=0.5, max_s=60, multiplier=2, jitter=0, reset_after_s=10)


def crash_and_wait_for_timer(tree: Tree, sup: Supervisor, name: str, incarnation: int) -> None:
    exit_child(tree, sup, name, incarnation, "crash")
    assert tree.clock.wait_for_timers(1), "the supervisor scheduled no restart"


def assert_restarts_after(
    tree: Tree, sup: Supervisor, name: str, incarnation: int, delay: float
) -> None:
    """``name`` restarts as incarnation ``incarnation`` exactly ``delay`` fake seconds on."""
    tree.clock.advance(delay / 2)
    settle(sup)
    assert (name, incarnation) not in tree.journal.actors, f"{name} restarted before {delay}s"
    tree.clock.advance(delay / 2)
    settle(sup)
    assert (name, incarnation) in tree.journal.actors, f"{name} not restarted after {delay}s"


def test_backoff_grows_exponentially_and_resets_after_stability(tree: Tree) -> None:
    sup = tree.start(OneForOne(max_restarts=100, within_s=5, backoff=BACKOFF), [tree.worker("b")])
    exit_child(tree, sup, "b", 1, "crash")
    # The first restart after a stable period is immediate.
    assert ("b", 2) in tree.journal.actors
    assert tree.clock.pending() == 0
    # Then min_s * multiplier ** (n - 2): 0.5 s, 1 s, 2 s, 4 s.
    for incarnation, delay in ((3, 0.5), (4, 1.0), (5, 2.0), (6, 4.0)):
        crash_and_wait_for_timer(tree, sup, "b", incarnation - 1)
        assert_restarts_after(tree, sup, "b", incarnation, delay)
    # Stable for reset_after_s: the next crash restarts at once again, then 0.5 s.
    tree.clock.advance(10)
    exit_child(tree, sup, "b", 6, "crash")
    assert ("b", 7) in tree.journal.actors
    crash_and_wait_for_timer(tree, sup, "b", 7)
    assert_restarts_after(tree, sup, "b", 8, 0.5)
    backoffs = [e["backoff_s"] for e in tree.lifecycle(lifecycle.ACTOR_RESTARTED, "b")]
    assert backoffs == [0.0, 0.5, 1.0, 2.0, 4.0, 0.0, 0.5]
    attempts = [e["attempt"] for e in tree.lifecycle(lifecycle.ACTOR_RESTARTED, "b")]
    assert attempts == [1, 2, 3, 4, 5, 1, 2]


def test_backoff_is_capped_at_max_s(tree: Tree) -> None:
    capped = Backoff(min_s=0.5, max_s=1.0, multiplier=4, jitter=0, reset_after_s=10)
    sup = tree.start(OneForOne(max_restarts=100, backoff=capped), [tree.worker("b")])
    exit_child(tree, sup, "b", 1, "crash")
    crash_and_wait_for_timer(tree, sup, "b", 2)
    assert_restarts_after(tree, sup, "b", 3, 0.5)
    crash_and_wait_for_timer(tree, sup, "b", 3)
    assert_restarts_after(tree, sup, "b", 4, 1.0)  # 0.5 * 4 = 2.0, capped at 1.0


def test_each_child_keeps_its_own_backoff(tree: Tree) -> None:
    # one_for_one children back off independently: a crash of one child must neither
    # hurry a sibling's pending restart nor hold it back.
    sup = tree.start(
        OneForOne(max_restarts=100, backoff=BACKOFF), [tree.worker("a"), tree.worker("b")]
    )
    exit_child(tree, sup, "a", 1, "crash")  # a: immediate
    crash_and_wait_for_timer(tree, sup, "a", 2)  # a: 0.5 s pending
    exit_child(tree, sup, "b", 1, "crash")  # b: its first, immediate
    assert ("b", 2) in tree.journal.actors
    assert ("a", 3) not in tree.journal.actors, "b's immediate restart hurried a's backoff"
    assert_restarts_after(tree, sup, "a", 3, 0.5)

    crash_and_wait_for_timer(tree, sup, "a", 3)  # a: 1 s pending
    crash_and_wait_for_timer(tree, sup, "b", 2)  # b: 0.5 s pending
    assert_restarts_after(tree, sup, "b", 3, 0.5)
    assert ("a", 4) not in tree.journal.actors
    assert_restarts_after(tree, sup, "a", 4, 0.5)  # a: the other half of its 1 s
    assert tree.journal.live() == {"a": [4], "b": [3]}


def test_messages_sent_during_backoff_wait_in_the_mailbox(tree: Tree) -> None:
    sup = tree.start(OneForOne(max_restarts=100, backoff=BACKOFF), [tree.worker("b")])
    exit_child(tree, sup, "b", 1, "crash")
    crash_and_wait_for_timer(tree, sup, "b", 2)
    # Nobody runs b now; senders still just tell its address.
    for n in range(5):
        tree.tell("b", n)
    reply = tree.addresses["b"].ask_future("ping")
    tree.clock.advance(0.5)
    assert reply.get(timeout=TIMEOUT) == ("b", 3)
    assert tree.journal.actor("b", 3).handled == [0, 1, 2, 3, 4]
    settle(sup)


# -- 4. failure paths ---------------------------------------------------------------------


def test_handler_exception_keeps_the_mailbox(tree: Tree) -> None:
    sup = tree.start(OneForOne(backoff=NO_BACKOFF), [tree.worker("b")])
    first = tree.journal.actor("b", 1)
    tree.tell("b", 1)
    tree.tell("b", "crash")
    for n in (2, 3, 4):
        tree.tell("b", n)  # queued behind the crash: must reach the next incarnation
    assert tree.addresses["b"].ask("ping", timeout=TIMEOUT) == ("b", 2)
    assert first.handled == [1]
    assert tree.journal.actor("b", 2).handled == [2, 3, 4]
    (failed,) = tree.lifecycle(lifecycle.ACTOR_FAILED, "b")
    assert failed["error_type"] == "RuntimeError"
    assert "crashed on purpose" in failed["message"]
    settle(sup)


def test_ask_that_raises_answers_the_asker_without_a_crash(tree: Tree) -> None:
    # An ordinary exception in an ask goes back to the asker; the child keeps running.
    sup = tree.start(OneForOne(backoff=NO_BACKOFF), [tree.worker("b")])
    with pytest.raises(RuntimeError, match="crashed on purpose"):
        tree.addresses["b"].ask("crash", timeout=TIMEOUT)
    assert tree.addresses["b"].ask("ping", timeout=TIMEOUT) == ("b", 1)
    settle(sup)


def test_on_stop_exception_on_a_normal_exit_is_a_crash(tree: Tree) -> None:
    # A transient child that exits normally but fails in on_stop exited abnormally.
    sup = tree.start(
        OneForOne(backoff=NO_BACKOFF),
        [tree.worker("b", "transient", fail_stop=lambda name, inc: inc == 1)],
    )
    exit_child(tree, sup, "b", 1, "exit")
    assert tree.journal.live() == {"b": [2]}
    (failed,) = tree.lifecycle(lifecycle.ACTOR_FAILED, "b")
    assert "failed in on_stop" in failed["message"]


def test_on_stop_exception_during_a_sweep_does_not_stop_the_sweep(tree: Tree) -> None:
    sup = tree.start(
        OneForAll(backoff=NO_BACKOFF),
        [
            tree.worker("a"),
            tree.worker("b"),
            tree.worker("c", fail_stop=lambda name, inc: inc == 1),
        ],
    )
    mark = tree.journal.mark()
    exit_child(tree, sup, "a", 1, "crash")
    assert tree.journal.since(mark) == [
        ("stop", "c", 1),
        ("stop", "b", 1),
        ("start", "a", 2),
        ("start", "b", 2),
        ("start", "c", 2),
    ]
    stopped = tree.lifecycle(lifecycle.ACTOR_STOPPED, "c")
    assert [s.get("error_type") for s in stopped] == ["RuntimeError"]


@pytest.mark.parametrize("exception", [KeyboardInterrupt("^C in a handler"), SystemExit(3)])
def test_base_exception_is_contained(tree: Tree, exception: BaseException) -> None:
    # pykka would call ActorRegistry.stop_all() on a BaseException; reactor must
    # report it as a crash of that one child and restart it, touching nothing else.
    bystander = pykka.ThreadingActor.start()
    try:
        sup = tree.start(OneForOne(backoff=NO_BACKOFF), [tree.worker("a"), tree.worker("b")])
        tree.tell("b", Raise(exception))
        tree.tell("b", "after")
        assert tree.addresses["b"].ask("ping", timeout=TIMEOUT) == ("b", 2)
        assert tree.journal.actor("b", 2).handled == ["after"]
        assert bystander.is_alive()
        assert tree.addresses["a"].ask("ping", timeout=TIMEOUT) == ("a", 1)
        assert sup.actor_ref.is_alive()
        (failed,) = tree.lifecycle(lifecycle.ACTOR_FAILED, "b")
        assert failed["error_type"] == type(exception).__name__
        settle(sup)
    finally:
        bystander.stop()


def test_base_exception_in_an_ask_reaches_the_asker_and_restarts(tree: Tree) -> None:
    sup = tree.start(OneForOne(backoff=NO_BACKOFF), [tree.worker("b")])
    with pytest.raises(KeyboardInterrupt):
        tree.addresses["b"].ask(Raise(KeyboardInterrupt()), timeout=TIMEOUT)
    assert tree.addresses["b"].ask("ping", timeout=TIMEOUT) == ("b", 2)
    settle(sup)


def test_base_exception_in_on_start_counts_as_a_crash(tree: Tree) -> None:
    def interrupt(name: str, incarnation: int) -> bool:
        if incarnation == 2:
            raise KeyboardInterrupt("in on_start")
        return False

    sup = tree.start(OneForOne(backoff=NO_BACKOFF), [tree.worker("b", fail_start=interrupt)])
    exit_child(tree, sup, "b", 1, "crash")
    assert tree.journal.live() == {"b": [3]}
    failed = [f["error_type"] for f in tree.lifecycle(lifecycle.ACTOR_FAILED, "b")]
    assert failed == ["RuntimeError", "KeyboardInterrupt"]


# -- 6. stable address ---------------------------------------------------------------------


def test_senders_never_see_a_dead_actor_while_it_restarts(tree: Tree) -> None:
    # A sender hammers the address while the child crashes and restarts 20 times:
    # every tell and ask goes through, every message is handled exactly once.
    sup = tree.start(OneForOne(max_restarts=1000, backoff=NO_BACKOFF), [tree.worker("b")])
    address = tree.addresses["b"]
    errors: list[BaseException] = []
    done = threading.Event()

    def sender() -> None:
        try:
            for n in range(2000):
                address.tell(n)
                if n % 100 == 99:
                    address.tell("crash")
        except BaseException as exc:  # any error here is the failure under test
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=sender, name="test-sender")
    thread.start()
    assert done.wait(TIMEOUT)
    thread.join(TIMEOUT)
    assert address.ask("ping", timeout=TIMEOUT) == ("b", 21)
    assert errors == []
    handled = [n for inc in range(1, 22) for n in tree.journal.actor("b", inc).handled]
    assert handled == list(range(2000))
    settle(sup)


def test_nested_restart_leaves_one_incarnation_per_child(tree: Tree) -> None:
    # When a parent restarts a nested supervisor, the exit reports of the children the
    # old incarnation stopped are still in the nested supervisor's mailbox; they name
    # the same children and incarnation numbers as the fresh ones and must be ignored.
    inner = tree.nested(
        "inner", OneForOne(max_restarts=0, backoff=NO_BACKOFF), [tree.worker("x"), tree.worker("y")]
    )
    top = tree.start(OneForOne(backoff=NO_BACKOFF), [inner], name="top")
    old_inner = _supervisor_actor(top, "inner")
    tree.tell("y", "crash")
    settle(top, old_inner)
    new_inner = _supervisor_actor(top, "inner")
    settle(new_inner)
    settle(top)
    assert tree.journal.live() == {"x": [1], "y": [1]}
    assert tree.lifecycle(lifecycle.ACTOR_RESTARTED, "x") == []
    # inner gave up once (y's crash), not again over x's report from its predecessor.
    assert len(tree.lifecycle(lifecycle.SUPERVISOR_ESCALATED)) == 1
    assert [e["incarnation"] for e in tree.lifecycle(lifecycle.ACTOR_STARTED, "inner")] == [1, 2]
    assert tree.addresses["x"].ask("ping", timeout=TIMEOUT) == ("x", 1)
