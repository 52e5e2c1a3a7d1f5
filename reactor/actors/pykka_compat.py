"""The two pykka internals reactor relies on, imported in this one place.

reactor runs its own actor loop on pykka's thread, registry and futures (see
:mod:`reactor.actors.base`), so it must speak the two private types that pykka's
:class:`~pykka.ActorRef` puts in an actor's inbox:

* :class:`Envelope`: every message, as ``envelope.message`` with the future to
  answer in ``envelope.reply_to`` (None for ``tell``);
* :class:`ActorStop`: what ``ActorRef.stop()`` (and so ``ActorRegistry.stop_all()``)
  asks with; the loop stops and answers it once the actor has exited.

``tests/test_pykka_compat.py`` pins both against the installed pykka, so an
upgrade that changes them fails there, by name, instead of deep in a loop.
"""

from __future__ import annotations

from pykka._envelope import Envelope
from pykka.messages import _ActorStop as ActorStop

__all__ = ["ActorStop", "Envelope"]
