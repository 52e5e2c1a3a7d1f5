"""Consumers whose handler is a coroutine: ``async def handle(event)``.

Such a consumer owns an event loop, on a thread of its own, and runs up to
``concurrency`` of its events there at once, each in its own task; the actor
itself stays what every consumer is (it joins its group, takes deliveries, acks,
nacks, publishes outputs), so acks, retries, dead letters, outputs, dedup and
supervision are those of a plain consumer (:mod:`reactor.runtime.consumer`).

Order: events of one key run one after another, in delivery order; events without
a key, and of other keys, overlap. When a keyed event fails and is retried later,
the events of its key this consumer holds are handed back to wait behind the retry,
as a plain consumer does.

A coroutine that runs past ``handler_timeout`` is cancelled (``CancelledError`` is
raised where it awaits): a failed attempt, retried and then dead-lettered under the
failure rules. Unlike a hung plain handler, it does not cost the consumer a restart.
A coroutine that never awaits blocks the loop and every other event of this
consumer with it: keep blocking calls out of ``async def`` handlers (or use
``asyncio.to_thread``).

``on_start`` and ``on_stop`` may be coroutines too; they run on the same loop.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import attrs

from reactor.actors.base import THREAD_PREFIX, ActorContext
from reactor.messages.control import Deliver, Encoded, Tick
from reactor.messages.event import Event
from reactor.runtime.consumer import ConsumerActor, ConsumerRuntime, _Stopping
from reactor.runtime.handling import as_events, handling_task

__all__ = ["CoroutineConsumerActor"]

_HOOK_TIMEOUT_S = 60.0
_LOOP_JOIN_S = 5.0


@attrs.define(eq=False)
class _Item:
    """A delivered event this consumer has not started yet."""

    seq: int
    item: Event | Encoded
    batch: Deliver
    index: int

    @property
    def key(self) -> str | None:
        return self.item.key


@attrs.define(eq=False)
class _Running:
    """An event whose coroutine is running on the loop."""

    item: _Item
    event: Event
    future: Any  # concurrent.futures.Future of the task
    started: float
    timed_out: bool = False


@attrs.frozen(slots=True)
class _RunOf:
    """News of one run: the coroutine handling ``seq`` as ``future``, not an earlier one."""

    seq: int
    future: Any


@attrs.frozen(slots=True)
class _Done(_RunOf):
    """A coroutine finished (returned, raised or was cancelled); told from the loop thread."""


@attrs.frozen(slots=True)
class _Expired(_RunOf):
    """A coroutine's ``handler_timeout`` passed; told from the clock's thread."""


class CoroutineConsumerActor(ConsumerActor):
    """One incarnation of a consumer whose handler is a coroutine function."""

    def __init__(self, context: ActorContext, runtime: ConsumerRuntime) -> None:
        super().__init__(context, runtime)
        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(
            target=self.loop.run_forever,
            name=f"{THREAD_PREFIX}{runtime.member}#{context.incarnation}:loop",
            daemon=True,  # ended in on_exit; a daemon so a stuck coroutine never holds the process
        )
        self.waiting: list[_Item] = []
        self.running: dict[int, _Running] = {}
        self.busy_keys: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------

    def on_start(self) -> None:
        self.loop_thread.start()
        super().on_start()

    def on_exit(self) -> None:
        """Cancel what still runs and end the loop's thread, whatever ended this incarnation."""
        loop = self.loop
        if not self.loop_thread.is_alive():
            loop.close()
            return

        async def finish() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(finish(), loop)
        self.loop_thread.join(_LOOP_JOIN_S)
        if not self.loop_thread.is_alive():
            loop.close()

    def run_hook(self, hook: Callable[[], Any]) -> None:
        result = hook()
        if inspect.isawaitable(result):
            asyncio.run_coroutine_threadsafe(_awaited(result), self.loop).result(_HOOK_TIMEOUT_S)

    # -- messages --------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is _Done:
            self._finished(message)
            self._launch()
            return None
        if kind is _Expired:
            running = self.running.get(message.seq)
            if running is not None and running.future is message.future:
                running.timed_out = True
                running.future.cancel()
            return None
        if kind is Tick and message.token is not None and message.token is self.paused:
            self.paused = None
            self._launch()
            return None
        return super().on_receive(message)

    def _work(self) -> None:
        """Take the delivered batches apart into items, and start what may start."""
        while self.pending:
            batch = self.pending.popleft()
            if self.holds:
                self._expire_holds(batch)
            self.waiting += [
                _Item(seq, item, batch, index)
                for index, (seq, item) in enumerate(zip(batch.seqs, batch.events, strict=True))
            ]
        self._launch()

    # -- running coroutines ----------------------------------------------------------

    def _launch(self) -> None:
        """Start waiting items, in order, while there is room and their key is free."""
        runtime = self.runtime
        room = runtime.concurrency - len(self.running)
        waiting = self.waiting
        index = 0
        while index < len(waiting) and room > 0 and self.paused is None:
            if self.actor_stopping:
                break  # what is left stays with the channel for the next incarnation
            item = waiting[index]
            key = item.key
            if key is not None and key in self.busy_keys:
                index += 1  # behind an event of its key that is still running
                continue
            del waiting[index]
            event = self._admit(item.seq, item.item)
            if event is None:
                continue
            self._begin(item, event)
            room -= 1
        self.actor_counters.in_flight = len(self.running) + len(waiting)
        self._flush()

    def _begin(self, item: _Item, event: Event) -> None:
        runtime = self.runtime
        handle = self.handle
        assert handle is not None
        current = (runtime, item.batch, item.index)
        future = asyncio.run_coroutine_threadsafe(_call(handle, event, current), self.loop)
        self.running[item.seq] = _Running(item, event, future, self.actor_clock.monotonic())
        if event.key is not None:
            self.busy_keys.add(event.key)
        address = self.actor_address
        seq = item.seq
        future.add_done_callback(lambda done: address.tell(_Done(seq, done)))
        if runtime.handler_timeout is not None:
            self.actor_clock.call_later(
                runtime.handler_timeout, lambda: address.tell(_Expired(seq, future))
            )

    def _finished(self, done: _Done) -> None:
        running = self.running.get(done.seq)
        if running is None or running.future is not done.future:
            return  # from an earlier run of this seq
        del self.running[done.seq]
        event = running.event
        if event.key is not None:
            self.busy_keys.discard(event.key)
        item = running.item
        attempt = item.batch.attempts[item.index]
        future = done.future
        if future.cancelled() and not running.timed_out:
            return  # cancelled by a stop: the event goes back to the channel unacked
        try:
            if running.timed_out:
                raise TimeoutError(
                    f"handler of consumer {self.runtime.name!r} ran longer than its "
                    f"handler_timeout of {self.runtime.handler_timeout}s and was cancelled"
                )
            result = future.result()
            outputs = as_events(event, result, self.runtime.name) if result is not None else ()
            if outputs and not self.actor_fenced:
                self._publish(outputs)
        except _Stopping:
            return  # not a failure: the event goes back to the channel unacked
        except Exception as exc:
            self._failed(item.seq, event, attempt, exc)  # may pause, or raise ConsumerFailing
            return
        self._succeeded(item.seq, event, attempt, running.started)


async def _call(
    handle: Callable[[Event], Coroutine[Any, Any, Any]],
    event: Event,
    current: Any,
) -> Any:
    handling_task.set(current)  # this task's own context: current_delivery() reads it
    return await handle(event)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
