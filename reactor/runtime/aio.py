"""The asyncio face of a system: start, publish, wait and stop without blocking the loop.

An asyncio service (an ASGI app, an aiohttp server, a bot) runs everything on one
event loop, and every call of :class:`~reactor.System` that can wait (``start``,
``publish`` on a full channel, ``wait_idle``, ``stop``) would freeze it.
:class:`AsyncSystem` awaits them instead:

* ``start`` and ``stop`` run on a worker thread, their result awaited;
* each channel gets one publishing thread (started on its first publish), which
  carries that channel's publishes in the order they were called: a publish waiting
  for credits holds back the publishes behind it to the same channel, as a full
  channel holds back a thread, and never those to another channel or the loop;
* ``wait_idle`` watches the system from the loop, in growing steps of at most
  :data:`_IDLE_STEP_MAX_S`, so a cancelled wait leaves nothing behind.

A publish cancelled while it waits its turn is not published; one cancelled while
its thread is already handing it to the channel completes (its event is published)
and the caller sees the cancellation. ``metrics()``, ``health()`` and ``state``
never wait, so they are plain methods.

Safe to use from one event loop at a time; the :class:`~reactor.System` underneath
(``.system``) stays usable from threads.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from reactor.errors import IdleTimeout, SystemStoppedError
from reactor.messages.event import Event
from reactor.runtime.replies import no_reply
from reactor.runtime.scheduling import due_time
from reactor.runtime.system import System

if TYPE_CHECKING:
    from reactor.clock import Clock
    from reactor.runtime.metrics import Health, SystemMetrics
    from reactor.runtime.topology import Topology

__all__ = ["AsyncSystem"]

_IDLE_STEP_MIN_S = 0.001
_IDLE_STEP_MAX_S = 0.05

_T = TypeVar("_T")


class AsyncSystem:
    """A :class:`~reactor.System` driven from an asyncio event loop.

    Example::

        async with AsyncSystem(topology) as system:
            await system.publish("orders", "order.placed", {"id": 7})
            await system.wait_idle()

    Leaving the ``async with`` block drains and stops the system (without draining
    when the block raised), like leaving ``with topology.start()``.
    """

    def __init__(
        self, topology: Topology, *, clock: Clock | None = None, seed: int | None = None
    ) -> None:
        """Prepare the system; nothing starts until :meth:`start` or ``async with``.

        Args:
            topology: what to run.
            clock: the clock for timers, backoff and intensity (tests pass a FakeClock).
            seed: seeds the supervisors' backoff jitter, for repeatable runs.
        """
        self.system: System = System(topology, clock=clock, seed=seed)
        self._publishers: dict[str, ThreadPoolExecutor] = {}
        self._publishers_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The topology's name."""
        return self.system.name

    @property
    def state(self) -> str:
        """``created``, ``starting``, ``running``, ``stopping``, ``stopped`` or ``failed``."""
        return self.system.state

    # -- start and stop ------------------------------------------------------------------

    async def start(self) -> AsyncSystem:
        """Validate the topology and start it, without blocking the loop.

        Raises:
            TopologyError: the topology is invalid; nothing was started.
            SupervisorEscalation: a child kept failing to start.
        """
        await asyncio.to_thread(self.system.start)
        return self

    async def stop(self, timeout: float = 10.0, *, drain: bool = True) -> None:
        """Stop producers, drain what is in flight, stop the rest: :meth:`System.stop`.

        Publishes already waiting for their turn are carried out first (each then
        finds the system stopping and raises :class:`~reactor.SystemStoppedError` if
        it is too late); the publishing threads end with the stop.
        """
        try:
            await asyncio.to_thread(self.system.stop, timeout, drain=drain)
        finally:
            with self._publishers_lock:
                publishers = list(self._publishers.values())
                self._publishers.clear()
            for publisher in publishers:
                publisher.shutdown(wait=False, cancel_futures=True)
            # Their threads end at once now: the system refuses whatever they still hold.
            await asyncio.to_thread(_join_all, publishers)

    async def __aenter__(self) -> AsyncSystem:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(drain=exc_type is None)

    # -- publishing ----------------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        topic: str | Event,
        data: Any = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = 30.0,
        delay: float | None = None,
        at: datetime | None = None,
        version: int | None = None,
    ) -> Event:
        """:meth:`System.publish`, awaited: it raises what that raises.

        Waiting for credits on a full ``block`` channel awaits; the loop runs on.
        A ``delay`` counts from this call, not from when its turn comes.
        """
        # Made here, so that a bad topic or payload raises before any thread is used.
        event = (
            topic
            if isinstance(topic, Event)
            else Event.create(topic, data, key=key, headers=headers, version=version)
        )
        at = self._due_at(delay, at)
        return await self._in_turn(
            channel, self.system.publish, channel, event, timeout=timeout, at=at
        )

    async def publish_many(
        self,
        channel: str,
        events: Iterable[Event],
        *,
        timeout: float | None = 30.0,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> int:
        """Publish ready-made events in order: :meth:`System.publish_many`.

        Returns:
            How many entered the channel (fewer only under ``drop_newest``).
        """
        at = self._due_at(delay, at)
        return await self._in_turn(
            channel, self.system.publish_many, channel, list(events), timeout=timeout, at=at
        )

    def _due_at(self, delay: float | None, at: datetime | None) -> datetime | None:
        """The moment ``delay`` / ``at`` names, fixed now (checked before any thread is used)."""
        if delay is None and at is None:
            return None
        due = due_time(self.system.clock, delay, at)
        return None if due is None else datetime.fromtimestamp(due, UTC)

    async def request(
        self,
        channel: str,
        topic: str,
        data: Any = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Event:
        """Publish a request and await its reply: :meth:`System.request`.

        Raises:
            RequestTimeout: no reply within ``timeout``; a later reply is dropped and counted.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        request = Event.create(topic, data, key=key, headers=headers)
        future = await self._in_turn(
            channel, self.system.submit_request, channel, request, timeout=timeout
        )
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(future), max(0.0, deadline - loop.time())
            )
        except TimeoutError:
            future.cancel()
            raise no_reply(future.request, channel, timeout) from None

    async def _in_turn(
        self, channel: str, call: Callable[..., _T], *args: Any, **kwargs: Any
    ) -> _T:
        future = self._publisher(channel).submit(functools.partial(call, *args, **kwargs))
        return await asyncio.wrap_future(future)

    def _publisher(self, channel: str) -> ThreadPoolExecutor:
        with self._publishers_lock:
            publisher = self._publishers.get(channel)
            if publisher is None:
                # Checked before a thread starts, so that a typo costs none: publishing
                # nothing raises what a publish would (not running, no such channel).
                self.system.publish_many(channel, ())
                publisher = ThreadPoolExecutor(1, thread_name_prefix=f"reactor:publish:{channel}")
                self._publishers[channel] = publisher
            return publisher

    # -- waiting and watching ------------------------------------------------------------

    async def wait_idle(self, timeout: float | None = 10.0, *, producers: bool = True) -> None:
        """Wait until everything published has been handled or dead-lettered.

        Raises:
            IdleTimeout: still busy after ``timeout`` seconds; names what is busy.
            SupervisorEscalation: the system failed; nothing will get idle any more.
            SystemStoppedError: the system was stopped while waiting (or before).
        """
        system = self.system
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        step = _IDLE_STEP_MIN_S
        while not system.is_idle(producers=producers):
            if system.state == "failed":
                system.wait(0)  # raises the escalation
            if system.state == "stopped":
                raise SystemStoppedError(
                    f"system {system.name!r} stopped before it was idle; nothing more will settle"
                )
            if deadline is not None and loop.time() >= deadline:
                busy = "; ".join(system.busy(producers=producers))
                raise IdleTimeout(f"system {system.name!r} not idle after {timeout}s: {busy}")
            pause = step if deadline is None else min(step, max(0.0, deadline - loop.time()))
            await asyncio.sleep(pause)  # the loop runs on; a cancel stops the wait here
            step = min(step * 2, _IDLE_STEP_MAX_S)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the system has stopped; True if it did within ``timeout``.

        Raises:
            SupervisorEscalation: the root supervisor gave up.
        """
        return await asyncio.to_thread(self.system.wait, timeout)

    def metrics(self) -> SystemMetrics:
        """A frozen snapshot of every actor and channel; never blocks."""
        return self.system.metrics()

    def health(self) -> Health:
        """Whether the system is healthy, and what is wrong if not; never blocks."""
        return self.system.health()

    def __repr__(self) -> str:
        return f"<AsyncSystem {self.name!r} {self.state}>"


def _join_all(publishers: list[ThreadPoolExecutor]) -> None:
    for publisher in publishers:
        publisher.shutdown(wait=True)
