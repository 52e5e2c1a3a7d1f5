"""The base of every reactor actor: pykka's threading actor, made supervisable.

pykka gives us the thread, the registry and futures. Its loop does three things
reactor cannot accept, so :class:`ReactorActor` runs its own loop instead:

* a failing ``tell`` handler only logs and stops the actor, losing queued messages;
  here it becomes an :class:`~reactor.messages.control.ExitReason` sent to the supervisor;
* a ``BaseException`` calls ``ActorRegistry.stop_all()``, taking every actor in the
  process down; here it is caught and reported like any crash;
* at exit pykka drains the inbox; here the inbox belongs to the :class:`Address` and
  is handed, untouched, to the next incarnation.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Self

import attrs
import pykka

from reactor.actors.address import Address
from reactor.actors.counters import ActorCounters
from reactor.actors.pykka_compat import ActorStop
from reactor.errors import CrashRequested
from reactor.messages.control import ChildExited, Crash, ErrorInfo, ExitReason, Wake

if TYPE_CHECKING:
    from reactor.clock import Clock

__all__ = ["ActorContext", "ActorThreads", "ReactorActor", "reactor_threads"]

logger = logging.getLogger("reactor")

THREAD_PREFIX = "reactor:"


def reactor_threads() -> list[threading.Thread]:
    """Every live thread that belongs to a reactor actor or timer."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(THREAD_PREFIX) or thread.name.startswith("reactor-timer")
    ]


class ActorThreads(list[threading.Thread]):
    """The threads started under one system, so the system can reap exactly its own.

    A list, read by the system when it stops; :meth:`add` is how actors join it.
    Threads that ended are dropped only when the list has doubled since the last
    sweep, so starting N actors costs O(N) in all, not O(N) each (a sweep asks
    every thread whether it is alive). Supervisors start children from several
    threads at once, hence the lock: a sweep must not drop a thread added meanwhile.

    Thread-safety: :meth:`add` may be called from any thread.
    """

    _SWEEP_FROM = 64

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._sweep_at = self._SWEEP_FROM

    def add(self, thread: threading.Thread) -> None:
        """Keep ``thread``, forgetting ended ones now and then."""
        with self._lock:
            if len(self) >= self._sweep_at:
                self[:] = [t for t in self if t.is_alive()]
                self._sweep_at = max(self._SWEEP_FROM, 2 * len(self))
            self.append(thread)


@attrs.define(eq=False)
class ActorContext:
    """What one incarnation gets from its supervisor: who it is and whom to tell."""

    address: Address
    clock: Clock
    parent: Address | None = attrs.field(default=None, kw_only=True)
    incarnation: int = attrs.field(default=1, kw_only=True)
    counters: ActorCounters = attrs.field(factory=ActorCounters, kw_only=True)
    # Every thread started under one system, so the system can reap exactly its own.
    threads: ActorThreads = attrs.field(factory=ActorThreads, kw_only=True)


class ReactorActor(pykka.ThreadingActor):
    """An actor with a stable address, counters and failure reporting.

    Subclasses implement :meth:`on_receive` (and optionally ``on_start``,
    ``on_stop`` and :meth:`on_crash`). Any exception escaping them ends this
    incarnation and is reported to the parent as an abnormal exit.
    """

    # Daemon threads: a handler that never returns must not keep the process alive
    # after the system has stopped and abandoned it.
    use_daemon_thread: ClassVar[bool] = True

    @staticmethod
    def _create_actor_inbox() -> Any:
        # pykka's __init__ makes an inbox that __init__ below replaces at once with the
        # address's: a bare SimpleQueue costs a tenth of pykka's Queue (three
        # Conditions), which matters with 10,000 actors.
        return queue.SimpleQueue()

    def __init__(self, context: ActorContext) -> None:
        super().__init__()
        # Swap pykka's fresh inbox for the address's, before anything can hold a ref.
        self.actor_inbox = context.address.inbox
        self._actor_ref = pykka.ActorRef(self)
        self.actor_context = context
        self.actor_address = context.address
        self.actor_clock = context.clock
        self.actor_counters = context.counters
        self.actor_incarnation = context.incarnation
        self.actor_started: pykka.Future[None] = pykka.ThreadingFuture()
        self.actor_thread: threading.Thread | None = None
        # Set from other threads; a plain attribute store is atomic under the GIL.
        self._actor_stop_requested = False
        self._actor_fenced = False
        self._actor_stop_replies: list[pykka.Future[Any]] = []
        # Why this incarnation ended; set before ``actor_stopped`` and before the parent
        # is told, so a supervisor holding the actor can read the true reason.
        self.actor_exit_reason: ExitReason | None = None

    @classmethod
    def spawn(cls, *args: Any, **kwargs: Any) -> Self:
        """Start an incarnation and return the actor itself, not a ref.

        Supervisors need the object to fence, stop and join it; everyone else
        talks to the :class:`Address`.
        """
        actor = cls(*args, **kwargs)
        pykka.ActorRegistry.register(actor.actor_ref)
        actor._start_actor_loop()
        return actor

    # -- control from other threads ------------------------------------------------

    def request_stop(self) -> None:
        """Ask this incarnation to finish the message it is on and stop.

        Messages still queued stay in the mailbox for the next incarnation.
        """
        self._actor_stop_requested = True
        self.actor_address.tell(Wake())

    def fence(self) -> None:
        """Disown this incarnation: it exits without reporting or acking anything.

        The supervisor fences an incarnation whose handler hung, before starting the
        next one, so the late result of the old one is ignored.
        """
        self._actor_fenced = True
        self.request_stop()

    @property
    def actor_fenced(self) -> bool:
        return self._actor_fenced

    @property
    def actor_stopping(self) -> bool:
        return self._actor_stop_requested

    def join(self, timeout: float | None) -> bool:
        """Wait for this incarnation's thread to end; True if it did."""
        thread = self.actor_thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # -- hooks -----------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if type(message) is Crash:
            raise CrashRequested(f"{self.actor_address.name}: {message.reason}")
        logger.warning("%s ignored an unexpected message: %r", self.actor_address.name, message)
        return None

    def on_crash(self, reason: ExitReason) -> None:
        """Called in the actor's thread after a crash, before the parent is told."""

    def on_exit(self) -> None:
        """Called in the actor's thread as it ends, whatever the reason (a fence too).

        Release here what the incarnation owns outside its thread (another thread, a
        loop): it runs after ``on_stop`` or ``on_crash``, before the parent is told.
        """

    # -- the loop --------------------------------------------------------------------

    def _start_actor_loop(self) -> None:
        thread = threading.Thread(
            target=self._actor_loop,
            name=f"{THREAD_PREFIX}{self.actor_address.name}#{self.actor_incarnation}",
            daemon=self.use_daemon_thread,
        )
        self.actor_thread = thread
        self.actor_context.threads.add(thread)
        thread.start()

    def _actor_loop(self) -> None:
        reason = ExitReason("normal")
        try:
            try:
                self.on_start()
            except BaseException as exc:  # a failing on_start counts as a crash
                reason = _crash(exc)
                self.actor_started.set_exception(sys.exc_info())
                return
            self.actor_started.set(None)
            reason = self._actor_loop_receive()
            if not reason.abnormal:
                try:
                    self.on_stop()
                except BaseException as exc:
                    reason = _crash(exc)
        finally:
            self._actor_exit(reason)

    def _actor_loop_receive(self) -> ExitReason:
        inbox = self.actor_inbox
        while not self._actor_stop_requested:
            envelope = inbox.get()
            message = envelope.message
            reply_to = envelope.reply_to
            if type(message) is Wake:
                continue
            if type(message) is ActorStop:
                if reply_to is not None:
                    self._actor_stop_replies.append(reply_to)
                self._actor_stop_requested = True
                break
            try:
                response = self.on_receive(message)
            except Exception as exc:
                if reply_to is not None:
                    # An ask gets its exception back; the asker decides what it means.
                    reply_to.set_exception(sys.exc_info())
                    continue
                return _crash(exc)
            except BaseException as exc:  # never let it reach pykka's stop_all()
                if reply_to is not None:
                    reply_to.set_exception(sys.exc_info())
                return _crash(exc)
            if reply_to is not None:
                reply_to.set(response)
        return ExitReason("normal")

    def _actor_exit(self, reason: ExitReason) -> None:
        if reason.abnormal and not self._actor_fenced:
            try:
                self.on_crash(reason)
            except BaseException:
                logger.exception("%s failed in on_crash", self.actor_address.name)
        try:
            self.on_exit()
        except BaseException:
            logger.exception("%s failed in on_exit", self.actor_address.name)
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_exit_reason = reason
        self.actor_stopped.set()
        for reply in self._actor_stop_replies:
            reply.set(None)
        if reason.abnormal:
            # The traceback is formatted only if a handler wants debug records.
            logger.debug("%s crashed", self.actor_address.name, exc_info=reason.exception)
        parent = self.actor_context.parent
        if parent is not None and not self._actor_fenced:
            parent.tell(ChildExited(self.actor_address.name, self.actor_incarnation, reason))


def _crash(exc: BaseException) -> ExitReason:
    # No traceback text: a crash is reported by type and message (the exception
    # itself rides along for escalation), and formatting one costs as much as the
    # rest of a restart.
    return ExitReason("crash", ErrorInfo.from_exception(exc, with_traceback=False), exc)
