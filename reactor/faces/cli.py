"""The ``reactor`` command line (also ``python -m reactor``).

Commands::

    reactor run TARGET [--dashboard/--no-dashboard] [--duration S] [--until-settled] [--json]
                       [--metrics-port P]
    reactor demo [NAME] [--backend URL] [--duration S] [--no-dashboard] [--json] [--metrics-port P]
    reactor graph TARGET [--format tree|mermaid]
    reactor worker TARGET [--only NAME[,NAME]] [--duration S] [--json] [--metrics-port P]
    reactor dead-letters TARGET list|redrive|purge [--channel C] [--group G] [--id ID ...] [--json]
    reactor version

Every command also takes ``--log-level LEVEL`` (the ``reactor`` logger on stderr,
``warning`` by default) and ``--debug`` (tracebacks with errors); ``run``,
``demo`` and ``worker`` take ``--connect-timeout S`` and ``--drain-timeout S``.

``TARGET`` is a topology file, a ``.py`` file defining one :class:`~reactor.Topology`,
or ``module:attribute`` naming a topology or a function that returns one
(:func:`~reactor.faces.targets.load_target`).

A mistake (a bad option, a target that does not load, a channel that cannot be
opened) is one line on stderr naming the thing and what to do, never a
traceback unless ``--debug``. Exit codes are :class:`~reactor.runtime.serve.ExitCode`:
0 success (also after Ctrl-C or SIGTERM), 1 the root supervisor gave up, 2 a
usage, topology or channel error (nothing ran), 3 a broker unreachable for
``--connect-timeout``, 4 a drain that timed out with events unhandled.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

import reactor
from reactor.errors import ReactorError, SupervisorEscalation, UsageError
from reactor.faces import letters, logs
from reactor.faces.graph import graph_mermaid, graph_tree
from reactor.faces.running import CONNECT_TIMEOUT_S, DRAIN_TIMEOUT_S, run_topology, say
from reactor.faces.targets import load_target
from reactor.runtime.serve import ExitCode
from reactor.runtime.topology import Topology
from reactor.runtime.worker import parse_only
from reactor.text import printable

__all__ = ["load_target", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` can return 2 itself."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}; see `{self.prog} --help`")


# -- commands --------------------------------------------------------------------------


def _common_options(*, defaults: bool) -> _Parser:
    """``--log-level`` and ``--debug``, taken before or after the command's name.

    The subcommands' copies have no defaults, so that ``reactor --debug run x``
    is not undone by ``run``'s own default.
    """
    common = _Parser(add_help=False)
    common.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default="warning" if defaults else argparse.SUPPRESS,
        metavar="LEVEL",
        help=f"show reactor's log on stderr from LEVEL up ({', '.join(logs.LEVELS)}; "
        "default warning, error for demo)",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="show tracebacks with errors",
    )
    return common


def _build_parser() -> argparse.ArgumentParser:
    common = _common_options(defaults=False)
    parser = _Parser(
        prog="reactor",
        description="An event-driven runtime on the actor model.",
        parents=[_common_options(defaults=True)],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, **options: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], **options)

    run = command("run", help="run a topology (a .toml file, a .py file or module:attribute)")
    _add_target(run)
    _add_run_options(run)
    run.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST", help=argparse.SUPPRESS)

    demo = command("demo", help="run a demo; without NAME, list them")
    demo.add_argument("name", nargs="?", metavar="NAME", help="the demo to run")
    demo.add_argument(
        "--backend",
        metavar="URL",
        help="the demo's channels on this backend, e.g. sqlite:///orders.db: stopped and "
        "started again, it goes on where it was (orders only; default memory)",
    )
    _add_run_options(demo)

    graph = command(
        "graph", help="show a topology as a tree or a mermaid flowchart (runs no handler code)"
    )
    _add_target(graph)
    graph.add_argument("--format", choices=("tree", "mermaid"), default="tree")

    command("version", help="print reactor's version")

    letters.add_parser(commands, parents=[common])

    worker = command(
        "worker", help="run part of a topology in this process, sharing its broker channels"
    )
    _add_target(worker)
    worker.add_argument(
        "--only",
        action="append",
        metavar="NAME[,NAME]",
        help="consumers, pools, supervisors or producers to run here (default: all)",
    )
    _add_run_options(worker)
    return parser


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="TARGET", help="a .toml file, .py file or module:attribute"
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"port {text} is out of range; pick one from 1 to 65535 (0 picks a free one)"
        )
    return value


# The options of every running command (run, demo, worker): each is passed on to
# run_topology under its own name (``--dashboard``, which it takes decided, is apart).
_RUN_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--duration",
        {"type": _seconds, "metavar": "S", "help": "run S seconds, then drain and stop"},
    ),
    ("--json", {"action": "store_true", "help": "write one JSON metrics snapshot per second"}),
    (
        "--until-settled",
        {
            "action": "store_true",
            "help": "stop once every producer ran dry and everything is handled or dead-lettered",
        },
    ),
    (
        "--metrics-port",
        {
            "type": _port,
            "metavar": "P",
            "help": "serve Prometheus metrics on loopback port P (0 picks a free one)",
        },
    ),
    (
        "--connect-timeout",
        {
            "type": _seconds,
            "default": CONNECT_TIMEOUT_S,
            "metavar": "S",
            "help": "exit with code 3 if a channel has not reached its broker S seconds after "
            f"the start (default {CONNECT_TIMEOUT_S:g})",
        },
    ),
    (
        "--drain-timeout",
        {
            "type": _seconds,
            "default": DRAIN_TIMEOUT_S,
            "metavar": "S",
            "help": "longest graceful drain at the end; events still unhandled then give exit "
            f"code 4 (default {DRAIN_TIMEOUT_S:g})",
        },
    ),
)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live dashboard (default: on when stdout is a terminal)",
    )
    for flag, options in _RUN_OPTIONS:
        parser.add_argument(flag, **options)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The values of :data:`_RUN_OPTIONS` in ``args``, by their names in ``run_topology``."""
    names = (flag.removeprefix("--").replace("-", "_") for flag, _ in _RUN_OPTIONS)
    return {name: getattr(args, name) for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``reactor`` command line.

    Args:
        argv: the arguments, without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code (:class:`~reactor.runtime.serve.ExitCode`).
    """
    out = Console()
    err = Console(stderr=True)
    parser = _build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments
    log: logs.TerminalLog | None = None
    try:
        try:
            args = parser.parse_args(arguments)
        except SystemExit as exc:  # --help and --version exit through argparse
            return exc.code if isinstance(exc.code, int) else ExitCode.OK
        if args.command is None:
            out.print(parser.format_help(), highlight=False, markup=False)
            return ExitCode.USAGE
        level = args.log_level
        if args.command == "demo" and not any(a.startswith("--log-level") for a in arguments):
            # A demo's failures are its show, drawn on the dashboard: not warnings to scroll it.
            level = "error"
        log = logs.install(err, level, tracebacks=debug)
        handler: Callable[..., int] = _COMMANDS[args.command]
        return handler(args, out, err, log)
    except ReactorError as exc:
        # A user's mistake or a channel that cannot open: one line, unless --debug.
        if debug:
            err.print(
                printable("".join(traceback.format_exception(exc))), highlight=False, markup=False
            )
        message = str(exc)
        if not message.startswith("reactor"):
            message = f"reactor: {message}"
        say(err, message)
        if isinstance(exc, SupervisorEscalation):
            return ExitCode.FAILED
        return ExitCode.USAGE
    finally:
        if log is not None:
            logs.uninstall(log)


def _dashboard_wanted(args: argparse.Namespace, out: Console) -> bool:
    if args.json:
        return False
    if args.dashboard is None:
        return out.is_terminal
    return bool(args.dashboard)


def _cmd_run(args: argparse.Namespace, out: Console, err: Console, log: logs.TerminalLog) -> int:
    return _run_with(args, out, err, log, load_target(args.target), metrics_host=args.metrics_host)


def _run_with(
    args: argparse.Namespace,
    out: Console,
    err: Console,
    log: logs.TerminalLog,
    topology: Topology,
    **options: Any,
) -> int:
    """``run_topology`` with the options every running command shares."""
    return run_topology(
        topology,
        out=out,
        err=err,
        dashboard=_dashboard_wanted(args, out),
        log=log,
        **_run_options(args),
        **options,
    )


def _cmd_demo(args: argparse.Namespace, out: Console, err: Console, log: logs.TerminalLog) -> int:
    from reactor.demos import DEMOS  # noqa: PLC0415 - demos load only when asked for

    if args.name is None:
        width = max(len(name) for name in DEMOS)
        for name, entry in DEMOS.items():
            out.print(
                f"{name:<{width}}  {entry.description}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        return ExitCode.OK
    demo = DEMOS.get(args.name)
    if demo is None:
        raise UsageError(f"no demo named {args.name!r}; choose one of: {', '.join(DEMOS)}")
    if args.backend is not None and not demo.durable:
        durable = ", ".join(name for name, entry in DEMOS.items() if entry.durable)
        raise UsageError(f"demo {args.name!r} runs on memory only; --backend is for: {durable}")
    topology = demo.build() if args.backend is None else demo.build(backend=args.backend)
    return _run_with(args, out, err, log, topology, panels=demo.panels or ())


def _cmd_graph(args: argparse.Namespace, out: Console, err: Console, log: logs.TerminalLog) -> int:
    # Drawing runs no user code: a TOML file's handler modules are not imported.
    topology = load_target(args.target, import_code=False)
    topology.validate()
    if args.format == "mermaid":
        out.out(graph_mermaid(topology), end="", highlight=False)
    else:
        out.print(graph_tree(topology))
    return ExitCode.OK


def _cmd_version(
    args: argparse.Namespace, out: Console, err: Console, log: logs.TerminalLog
) -> int:
    out.print(f"reactor {reactor.__version__}", highlight=False)
    return ExitCode.OK


def _cmd_worker(args: argparse.Namespace, out: Console, err: Console, log: logs.TerminalLog) -> int:
    only = parse_only(args.only) if args.only else None
    return _run_with(args, out, err, log, load_target(args.target), only=only)


def _cmd_dead_letters(
    args: argparse.Namespace, out: Console, err: Console, log: logs.TerminalLog
) -> int:
    return letters.run(args, load_target(args.target), out, err)


_COMMANDS: dict[str, Callable[..., int]] = {
    "dead-letters": _cmd_dead_letters,
    "run": _cmd_run,
    "demo": _cmd_demo,
    "graph": _cmd_graph,
    "version": _cmd_version,
    "worker": _cmd_worker,
}
