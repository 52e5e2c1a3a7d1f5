"""The ``reactor`` command line (also ``python -m reactor``).

Commands::

    reactor run TARGET [--dashboard/--no-dashboard] [--duration S] [--json] [--metrics-port P]
    reactor demo [NAME] [--duration S] [--no-dashboard] [--json]
    reactor graph TARGET [--format tree|mermaid]
    reactor worker TARGET [--only NAME[,NAME]] [--duration S] [--json] [--no-dashboard]
    reactor dead-letters TARGET list|redrive|purge [--channel C] [--group G] [--id ID ...] [--json]
    reactor version

``TARGET`` is a ``.toml`` topology file or ``module:attribute`` naming a
:class:`~reactor.Topology` or a function that returns one (``module`` may also be
a path to a ``.py`` file; modules are looked up in the current directory too).

Exit codes are :class:`~reactor.runtime.serve.ExitCode`: 0 success (also after
Ctrl-C or SIGTERM), 1 the root supervisor gave up, 2 a usage or topology error.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import tomllib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

import reactor
from reactor.errors import SupervisorEscalation, TopologyError, UsageError
from reactor.faces import letters
from reactor.faces.dashboard import Dashboard
from reactor.faces.export import MetricsServer, serve_metrics
from reactor.faces.graph import graph_mermaid, graph_tree
from reactor.runtime.imports import exec_file, import_module
from reactor.runtime.serve import ExitCode, serve
from reactor.runtime.topology import Topology
from reactor.runtime.worker import parse_only

__all__ = ["load_target", "main"]

# How long a graceful drain may take at the end of --duration or after Ctrl-C.
DRAIN_TIMEOUT_S = 30.0
STATUS_INTERVAL_S = 1.0


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` can return 2 itself."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}")


# -- targets ---------------------------------------------------------------------------


def load_target(target: str) -> Topology:
    """The topology that ``target`` names.

    Args:
        target: a ``.toml`` file, or ``module:attribute`` where the attribute is a
            :class:`Topology` or a zero-argument function returning one; ``module``
            is a dotted module name (looked up in the current directory too) or a
            path to a ``.py`` file.

    Raises:
        UsageError: the target cannot be found or is not a topology.
        TopologyError: the TOML file is invalid (the message names the file and key).
    """
    if target.endswith(".toml"):
        return _load_toml(target)
    if ":" not in target:
        if os.path.exists(target):
            return _load_toml(target)
        raise UsageError(
            f"target {target!r} is neither a .toml file nor module:attribute; "
            "try `reactor run shop.toml` or `reactor run myapp.topology:build`"
        )
    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise UsageError(f"target {target!r}: expected module:attribute, e.g. myapp:topology")
    module = _import(module_name, target)
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise UsageError(
            f"target {target!r}: module {module_name!r} has no attribute {attribute!r}"
        ) from None
    if isinstance(value, Topology):
        return value
    if callable(value):
        try:
            value = value()
        except TopologyError:
            raise
        except Exception as exc:
            raise UsageError(
                f"target {target!r}: calling {attribute}() raised {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(value, Topology):
            return value
        raise UsageError(
            f"target {target!r}: {attribute}() returned {type(value).__name__}, "
            "not a reactor.Topology"
        )
    raise UsageError(
        f"target {target!r}: {attribute} is a {type(value).__name__}; "
        "it must be a reactor.Topology or a function returning one"
    )


def _load_toml(path: str) -> Topology:
    if not os.path.exists(path):
        raise UsageError(f"topology file {path!r} does not exist")
    try:
        return Topology.from_toml(path)
    except TopologyError:
        raise
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"not valid TOML: {exc}", source=path) from exc
    except ModuleNotFoundError as exc:
        if exc.name == "reactor.runtime.toml":
            raise UsageError(f"cannot load {path!r}: this reactor has no TOML loader") from exc
        raise TopologyError(f"cannot import a handler: {exc}", source=path) from exc
    except OSError as exc:
        raise UsageError(f"cannot read topology file {path!r}: {exc}") from exc


def _import(module_name: str, target: str) -> ModuleType:
    if module_name.endswith(".py"):
        return _import_file(module_name, target)
    # `reactor run app:topo` means ./app.py, as with `python -m`, though a console
    # script's sys.path starts with the script's folder, not the current one.
    cwd = os.getcwd()
    try:
        return import_module(module_name, cwd)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(
                f"target {target!r}: no module named {module_name!r} (looked in {cwd} and sys.path)"
            ) from exc
        raise UsageError(f"target {target!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise UsageError(
            f"target {target!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc


def _import_file(path: str, target: str) -> ModuleType:
    if not os.path.exists(path):
        raise UsageError(f"target {target!r}: file {path!r} does not exist")
    name = "_reactor_target_" + os.path.splitext(os.path.basename(path))[0]
    try:
        return exec_file(name, path)
    except Exception as exc:
        raise UsageError(
            f"target {target!r}: importing {path!r} raised {type(exc).__name__}: {exc}"
        ) from exc


# -- running ---------------------------------------------------------------------------


def run_topology(
    topology: Topology,
    *,
    out: Console,
    err: Console,
    dashboard: bool,
    json: bool = False,
    duration: float | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    panels: Sequence[tuple[str, Callable[[], RenderableType]]] = (),
    only: frozenset[str] | None = None,
) -> ExitCode:
    """Start ``topology``, show it, and serve it until ``duration`` or Ctrl-C / SIGTERM.

    ``only`` starts just the named consumers, pools, supervisors and producers
    (``reactor worker``). Stopping is :func:`~reactor.runtime.serve.serve`'s; this
    face adds the dashboard, JSON lines or metrics server, and says when it drains.

    Returns:
        :attr:`ExitCode.OK`, or :attr:`ExitCode.FAILED` if the root supervisor gave up.

    Raises:
        TopologyError: the topology is invalid; nothing was started.
    """
    try:
        system = topology.start(only=only)
    except SupervisorEscalation as exc:  # a child kept failing to start
        err.print(Text(f"reactor: {topology.name}: {exc}", style="bold red"), soft_wrap=True)
        return ExitCode.FAILED
    server: MetricsServer | None = None
    try:
        if metrics_port is not None:
            server = serve_metrics(system, metrics_port, metrics_host)
            err.print(f"serving Prometheus metrics on {server.url}", highlight=False)
    except OSError as exc:
        system.stop(timeout=5.0, drain=False)
        raise UsageError(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}") from exc

    live = dashboard and not json
    view = Dashboard(system, console=out, panels=panels)
    announcer = _Announcer(err, live)
    view_done = threading.Event()
    viewer = threading.Thread(
        target=_show,
        args=(view, view_done),
        kwargs={"live": live, "json": json},
        name="reactor-dashboard",
        daemon=True,
    )
    viewer.start()
    try:
        code = serve(
            system,
            duration=duration,
            drain_timeout=DRAIN_TIMEOUT_S,
            on_stopping=announcer.stopping,
        )
    finally:
        view_done.set()
        viewer.join(5.0)
        if server is not None:
            server.close()
    if code is ExitCode.FAILED:
        try:
            system.wait(0)
        except SupervisorEscalation as exc:
            err.print(Text(f"reactor: {system.name}: {exc}", style="bold red"), soft_wrap=True)
    return code


class _Announcer:
    """Says on stderr that the system is draining, or stopping at once."""

    def __init__(self, err: Console, live: bool) -> None:
        self._err = err
        self._live = live

    def stopping(self, at_once: bool) -> None:
        if self._live:  # the live dashboard shows it in its header instead
            return
        if at_once:
            self._err.print("stopping at once", style="yellow", highlight=False)
        else:
            self._err.print(
                "draining… (Ctrl-C again to stop at once)", style="yellow", highlight=False
            )


def _show(
    view: Dashboard,
    done: threading.Event,
    *,
    live: bool,
    json: bool,
) -> None:
    """The viewer thread: live frames or status lines."""
    try:
        if live:
            view.run(stop_event=done)
        else:
            view.run_lines(stop_event=done, json=json, interval_s=STATUS_INTERVAL_S)
    finally:
        done.set()


# -- commands --------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reactor", description="An event-driven runtime on the actor model.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser("run", help="run a topology (a .toml file or module:attribute)")
    run.add_argument("target", metavar="TARGET", help="a .toml file or module:attribute")
    _add_run_options(run)
    run.add_argument(
        "--metrics-port", type=int, metavar="P", help="serve Prometheus metrics on loopback port P"
    )
    run.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST", help=argparse.SUPPRESS)

    demo = commands.add_parser("demo", help="run a demo; without NAME, list them")
    demo.add_argument("name", nargs="?", metavar="NAME", help="the demo to run")
    _add_run_options(demo)

    graph = commands.add_parser("graph", help="show a topology as a tree or a mermaid flowchart")
    graph.add_argument("target", metavar="TARGET", help="a .toml file or module:attribute")
    graph.add_argument("--format", choices=("tree", "mermaid"), default="tree")

    commands.add_parser("version", help="print reactor's version")

    letters.add_parser(commands)

    worker = commands.add_parser(
        "worker", help="run part of a topology in this process, sharing its broker channels"
    )
    worker.add_argument("target", metavar="TARGET", help="a .toml file or module:attribute")
    worker.add_argument(
        "--only",
        action="append",
        metavar="NAME[,NAME]",
        help="consumers, pools, supervisors or producers to run here (default: all)",
    )
    _add_run_options(worker)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live dashboard (default: on when stdout is a terminal)",
    )
    parser.add_argument(
        "--duration", type=_seconds, metavar="S", help="run S seconds, then drain and stop"
    )
    parser.add_argument(
        "--json", action="store_true", help="write one JSON metrics snapshot per second"
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``reactor`` command line.

    Args:
        argv: the arguments, without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 1 runtime failure, 2 usage or topology error.
    """
    out = Console()
    err = Console(stderr=True)
    parser = _build_parser()
    try:
        try:
            args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        except SystemExit as exc:  # --help and --version exit through argparse
            return exc.code if isinstance(exc.code, int) else ExitCode.OK
        if args.command is None:
            out.print(parser.format_help(), highlight=False, markup=False)
            return ExitCode.USAGE
        handler: Callable[[argparse.Namespace, Console, Console], int] = _COMMANDS[args.command]
        return handler(args, out, err)
    except UsageError as exc:
        err.print(str(exc), highlight=False, markup=False, soft_wrap=True)
        return ExitCode.USAGE
    except TopologyError as exc:
        err.print(f"reactor: {exc}", highlight=False, markup=False, soft_wrap=True)
        return ExitCode.USAGE


def _dashboard_wanted(args: argparse.Namespace, out: Console) -> bool:
    if args.json:
        return False
    if args.dashboard is None:
        return out.is_terminal
    return bool(args.dashboard)


def _cmd_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    return _run_with(
        args,
        out,
        err,
        load_target(args.target),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )


def _run_with(
    args: argparse.Namespace, out: Console, err: Console, topology: Topology, **options: Any
) -> int:
    """``run_topology`` with the options every running command shares."""
    return run_topology(
        topology,
        out=out,
        err=err,
        dashboard=_dashboard_wanted(args, out),
        json=args.json,
        duration=args.duration,
        **options,
    )


def _cmd_demo(args: argparse.Namespace, out: Console, err: Console) -> int:
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
    topology = demo.build()
    panels = demo.panels(topology) if demo.panels is not None else ()
    return _run_with(args, out, err, topology, panels=panels)


def _cmd_graph(args: argparse.Namespace, out: Console, err: Console) -> int:
    topology = load_target(args.target)
    topology.validate()
    if args.format == "mermaid":
        out.out(graph_mermaid(topology), end="", highlight=False)
    else:
        out.print(graph_tree(topology))
    return ExitCode.OK


def _cmd_version(args: argparse.Namespace, out: Console, err: Console) -> int:
    out.print(f"reactor {reactor.__version__}", highlight=False)
    return ExitCode.OK


def _cmd_worker(args: argparse.Namespace, out: Console, err: Console) -> int:
    only = parse_only(args.only) if args.only else None
    return _run_with(args, out, err, load_target(args.target), only=only)


def _cmd_dead_letters(args: argparse.Namespace, out: Console, err: Console) -> int:
    return letters.run(args, load_target(args.target), out, err)


_COMMANDS: dict[str, Callable[[argparse.Namespace, Console, Console], int]] = {
    "dead-letters": _cmd_dead_letters,
    "run": _cmd_run,
    "demo": _cmd_demo,
    "graph": _cmd_graph,
    "version": _cmd_version,
    "worker": _cmd_worker,
}
