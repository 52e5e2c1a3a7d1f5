"""What reactor relies on in pykka's private types (reactor/actors/pykka_compat.py)."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pykka

from reactor.actors.pykka_compat import ActorStop, Envelope


class _Stub:
    """The few attributes pykka's ActorRef reads from an actor, with a plain inbox."""

    actor_urn = "urn:uuid:pykka-compat"
    _create_future = pykka.ThreadingActor._create_future  # how ActorRef.ask makes its future

    def __init__(self) -> None:
        self.actor_inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.actor_stopped = threading.Event()


def test_an_envelope_carries_the_message_and_the_future_to_answer() -> None:
    future: pykka.Future[Any] = pykka.ThreadingFuture()
    told, asked = Envelope("hi"), Envelope("hi?", reply_to=future)
    assert (told.message, told.reply_to) == ("hi", None)
    assert (asked.message, asked.reply_to) == ("hi?", future)


def test_actor_ref_tell_and_ask_put_envelopes_in_the_inbox() -> None:
    stub = _Stub()
    ref = pykka.ActorRef(stub)  # type: ignore[arg-type]
    ref.tell("told")
    ref.ask("asked", block=False)
    told, asked = stub.actor_inbox.get_nowait(), stub.actor_inbox.get_nowait()
    assert type(told) is Envelope
    assert (told.message, told.reply_to) == ("told", None)
    assert type(asked) is Envelope
    assert asked.message == "asked"
    assert isinstance(asked.reply_to, pykka.Future)


def test_actor_ref_stop_asks_with_actor_stop_and_waits_for_its_answer() -> None:
    stub = _Stub()
    ref = pykka.ActorRef(stub)  # type: ignore[arg-type]
    stopped = ref.stop(block=False)
    envelope = stub.actor_inbox.get_nowait()
    assert type(envelope) is Envelope
    assert type(envelope.message) is ActorStop  # reactor's loop compares the exact type
    assert envelope.reply_to is not None
    envelope.reply_to.set(None)  # what reactor's loop does once the actor has exited
    assert stopped.get(timeout=5) is True
