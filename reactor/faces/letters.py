"""``reactor dead-letters TARGET list|redrive|purge``: a topology's stored dead letters.

The command opens the topology's channels without running any consumer or
producer (a system started with ``only`` empty), works on their dead-letter
stores, and stops again without draining. So it reaches what is *durable*:
a ``sqlite`` channel's letters in its file (the file's one writer: stop the
system that runs it first), a ``redis`` channel's letters in Redis (while
workers run, too). A redriven letter is appended to the channel for its group,
and handled when that group's consumers run. A ``memory`` channel keeps its
letters in the process that runs it: use :meth:`System.dead_letters` there.

Exit codes: 0 done, 1 Redis failed mid-command, 2 usage: an unknown channel,
group or id, or channels that cannot be opened (a log locked by a running
system, a missing file) (a one-line message naming it and what to do).
What a letter holds (its error message, its event's topic) is written by users:
it is shown with control characters escaped (:func:`reactor.text.printable`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from reactor.channels.backend import DeadLetter
from reactor.errors import (
    ReactorError,
    UnknownChannelError,
    UnknownDeadLetterError,
    UnknownGroupError,
    UsageError,
)
from reactor.messages.freeze import thaw
from reactor.runtime.serve import ExitCode
from reactor.runtime.system import System
from reactor.runtime.topology import Topology
from reactor.text import names_or_none, printable

__all__ = ["ACTIONS", "add_parser", "run"]

ACTIONS = ("list", "redrive", "purge")
_STOP_TIMEOUT_S = 10.0


def add_parser(commands: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Declare ``dead-letters`` on the CLI's subcommands (with the options of ``parents``)."""
    parser = commands.add_parser(
        "dead-letters",
        help="list, redrive or purge the dead letters of a topology's channels",
        parents=list(parents),
    )
    parser.add_argument("target", metavar="TARGET", help="a .toml file or module:attribute")
    parser.add_argument("action", choices=ACTIONS, help="what to do with them")
    parser.add_argument("--channel", metavar="C", help="one channel (default: every durable one)")
    parser.add_argument("--group", metavar="G", help="only the letters of consumer group G")
    parser.add_argument(
        "--id", dest="ids", nargs="+", action="extend", metavar="ID", help="only these letters"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace, topology: Topology, out: Console, err: Console) -> ExitCode:
    """Do ``args.action`` on the stored dead letters of ``topology``'s channels.

    Raises:
        UsageError: an unknown channel, group or id, or ids without a channel.
    """
    channels = _channels(topology, args.channel, args.ids)
    try:
        system = topology.start(only=())
    except ReactorError:
        raise  # a locked or corrupt log, a missing folder: one line, exit 2
    except Exception as exc:
        raise UsageError(
            f"reactor dead-letters: cannot open the channels of {topology.name!r}: "
            f"{type(exc).__name__}: {exc}; --debug shows the traceback"
        ) from exc
    try:
        for channel in channels:
            _act(system, channel, args, out)
    except (UnknownChannelError, UnknownGroupError, UnknownDeadLetterError) as exc:
        raise UsageError(f"reactor dead-letters: {exc}") from None
    except ReactorError as exc:
        err.print(printable(f"reactor: {exc}"), highlight=False, markup=False, soft_wrap=True)
        return ExitCode.FAILED
    finally:
        # Nothing runs here to handle what a redrive queued: leave it to the consumers.
        system.stop(timeout=_STOP_TIMEOUT_S, drain=False)
    return ExitCode.OK


def _channels(topology: Topology, channel: str | None, ids: list[str] | None) -> list[str]:
    durable = [n for n, decl in topology.channels.items() if not _in_memory(decl.backend)]
    if channel is not None:
        decl = topology.channels.get(channel)
        if decl is None:
            raise UsageError(
                f"reactor dead-letters: topology {topology.name!r} has no channel {channel!r} "
                f"(channels: {names_or_none(topology.channels)}); pass one of them to --channel"
            )
        if _in_memory(decl.backend):
            raise UsageError(
                f"reactor dead-letters: channel {channel!r} keeps its dead letters in memory, in "
                "the process that runs it; use System.dead_letters() there, or give the channel "
                "a durable backend (sqlite, redis)"
            )
        return [channel]
    if not durable:
        raise UsageError(
            f"reactor dead-letters: topology {topology.name!r} has no durable channel; memory "
            "channels keep their dead letters in the process that runs them: use "
            "System.dead_letters() there, or give a channel a durable backend (sqlite, redis)"
        )
    if ids and len(durable) != 1:
        raise UsageError(
            "reactor dead-letters: --id names letters of one channel; "
            f"say which with --channel (durable channels: {', '.join(durable) or 'none'})"
        )
    return durable


def _in_memory(backend: str) -> bool:
    return backend.split(":", 1)[0] == "memory"


def _act(system: System, channel: str, args: argparse.Namespace, out: Console) -> None:
    if args.action == "list":
        letters = system.dead_letters(channel, args.group)
        for letter in letters:
            if args.json:
                out.out(json.dumps(_as_json(letter), default=str), highlight=False)
            else:
                out.print(
                    printable(_line(letter), newlines=False),
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
        if not letters and not args.json:
            out.print(f"{channel}: no dead letters", highlight=False, markup=False)
        return
    if args.action == "redrive":
        count = system.redrive(channel, args.ids, group=args.group)
        done = "redriven"
    else:
        count = system.purge(channel, args.ids, group=args.group)
        done = "purged"
    if args.json:
        out.out(json.dumps({"channel": channel, done: count}), highlight=False)
    else:
        out.print(f"{channel}: {count} dead letter(s) {done}", highlight=False, markup=False)


def _line(letter: DeadLetter) -> str:
    event = letter.event
    what = f"{event.topic} {event.id}" if event is not None else f"<{len(letter.raw or b'')} bytes>"
    return (
        f"{letter.channel}  {letter.id}  group {letter.group}  {what}  "
        f"{letter.error_type}: {letter.message}  attempts {letter.attempts}  "
        f"consumer {letter.consumer or '-'}  {letter.time.isoformat()}"
    )


def _as_json(letter: DeadLetter) -> dict[str, Any]:
    event = letter.event
    return {
        "id": letter.id,
        "channel": letter.channel,
        "group": letter.group,
        "consumer": letter.consumer,
        "event": None
        if event is None
        else {
            "id": event.id,
            "topic": event.topic,
            "key": event.key,
            "time": event.time.isoformat(),
            "data": thaw(event.data),
        },
        "raw": None if letter.raw is None else letter.raw.decode("utf-8", "replace"),
        "where": dict(letter.where),
        "error_type": letter.error_type,
        "message": letter.message,
        "traceback": letter.traceback,
        "attempts": letter.attempts,
        "time": letter.time.isoformat(),
    }
