"""``reactor graph``: a topology's declarations as a rich tree or a mermaid flowchart."""

from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from reactor.runtime.topology import ConsumerDecl, PoolDecl, SupervisorDecl, Topology
from reactor.text import printable, redact_url

__all__ = ["graph_mermaid", "graph_tree"]


def graph_tree(topology: Topology) -> Tree:
    """The topology's declarations as a rich tree: channels, producers, supervision."""
    tree = Tree(Text(f"topology {topology.name}", style="bold"))
    channels = tree.add(Text("channels", style="bold"))
    for channel in topology.channels.values():
        channels.add(
            Text.assemble(
                (channel.name, "bold cyan"),
                f"  {printable(redact_url(channel.backend), newlines=False)}, "
                f"capacity {channel.capacity}, overflow {channel.overflow}",
            )
        )
    producers = tree.add(Text("producers", style="bold"))
    for producer in topology.producers:
        producers.add(
            Text.assemble(
                (producer.name, "bold green"), f"  → {producer.channel} ({producer.topic})"
            )
        )
    if topology.sagas:
        sagas = tree.add(Text("sagas", style="bold"))
        for saga in topology.sagas.values():
            steps = " → ".join(printable(step.name, newlines=False) for step in saga.steps)
            sagas.add(
                Text.assemble(
                    (saga.name, "bold blue"),
                    f"  ⇄ {saga.channel}, starts on {saga.start_on}: {steps}",
                )
            )
    if topology.projections:
        projections = tree.add(Text("projections", style="bold"))
        for projection in topology.projections.values():
            patterns = ", ".join(projection.patterns)
            projections.add(
                Text.assemble(
                    (printable(projection.name, newlines=False), "bold blue"),
                    f"  ← {projection.channel} [{patterns}], a read model",
                )
            )
    supervision = tree.add(_supervisor_label(topology.root))
    _graph_children(supervision, topology.root)
    return tree


def _supervisor_label(node: SupervisorDecl) -> Text:
    strategy = node.strategy
    return Text.assemble(
        (node.name, "bold magenta"),
        f"  supervisor {strategy.kind}, "
        f"max {strategy.max_restarts} restarts in {strategy.within_s:g}s",
    )


def _graph_children(branch: Tree, node: SupervisorDecl) -> None:
    for child in node.children:
        if isinstance(child, SupervisorDecl):
            _graph_children(branch.add(_supervisor_label(child)), child)
            continue
        patterns = ", ".join(child.patterns)
        where = f"  ← {child.channel} [{patterns}]"
        if child.group:
            where += f" group {child.group}"
        if child.output:
            where += f" → {child.output}"
        if isinstance(child, PoolDecl):
            label = Text.assemble(
                (child.name, "bold yellow"), f"  pool {child.min_size}..{child.max_size}", where
            )
        else:
            label = Text.assemble((child.name, "bold yellow"), "  consumer", where)
        branch.add(label)


def graph_mermaid(topology: Topology) -> str:
    """The topology as a mermaid flowchart: producers → channels → consumers,
    each supervisor a subgraph."""
    ids: dict[tuple[str, str], str] = {}

    def node_id(kind: str, name: str) -> str:
        key = (kind, name)
        if key not in ids:
            safe = "".join(ch if ch.isalnum() else "_" for ch in name)
            ids[key] = f"{kind}_{safe}_{len(ids)}"
        return ids[key]

    def label(text: str) -> str:
        return '"' + text.replace('"', "#quot;") + '"'

    lines = ["flowchart LR"]
    channel_names = list(topology.channels)
    used_system = any(decl.channel == "$system" for decl in topology.consumers())
    if used_system:
        channel_names.append("$system")
    for name in channel_names:
        lines.append(f"    {node_id('ch', name)}[({label(name)})]")
    for producer in topology.producers:
        lines.append(f"    {node_id('p', producer.name)}([{label(producer.name)}])")

    def declare(node: SupervisorDecl, depth: int) -> None:
        indent = "    " * depth
        for child in node.children:
            if isinstance(child, SupervisorDecl):
                title = f"{child.name} ({child.strategy.kind})"
                lines.append(f"{indent}subgraph {node_id('sup', child.name)}[{label(title)}]")
                declare(child, depth + 1)
                lines.append(f"{indent}end")
            elif isinstance(child, PoolDecl):
                text = f"{child.name} pool {child.min_size}..{child.max_size}"
                lines.append(f"{indent}{node_id('c', child.name)}[[{label(text)}]]")
            else:
                lines.append(f"{indent}{node_id('c', child.name)}[{label(child.name)}]")

    declare(topology.root, 1)
    for producer in topology.producers:
        lines.append(
            f"    {node_id('p', producer.name)} -->|{label(producer.topic)}| "
            f"{node_id('ch', producer.channel)}"
        )
    consumers: list[ConsumerDecl] = topology.consumers()
    for consumer in consumers:
        patterns = ", ".join(consumer.patterns)
        lines.append(
            f"    {node_id('ch', consumer.channel)} -->|{label(patterns)}| "
            f"{node_id('c', consumer.name)}"
        )
        if consumer.output is not None:
            lines.append(
                f"    {node_id('c', consumer.name)} -.->|returns| {node_id('ch', consumer.output)}"
            )
    for saga in topology.sagas.values():
        lines.append(f"    {node_id('s', saga.name)}{{{{{label(saga.name + ' saga')}}}}}")
        lines.append(
            f"    {node_id('ch', saga.channel)} <-->|{label(saga.start_on)}| {node_id('s', saga.name)}"
        )
    for projection in topology.projections.values():
        lines.append(f"    {node_id('r', projection.name)}[/{label(projection.name)}/]")
        lines.append(
            f"    {node_id('ch', projection.channel)} -->|"
            f"{label(', '.join(projection.patterns))}| {node_id('r', projection.name)}"
        )
    return "\n".join(lines) + "\n"
