"""A workflow's picture: its jobs as boxes, its rules and DataEdges as labelled arrows.

The graph is built once here, from a loaded ``Workflow`` and each job's last status, and
drawn from the same model everywhere: as SVG on the status page and by ``aiflowctl
workflow graph --format svg``, as text in a terminal, as Graphviz ``dot`` and Mermaid for
documents. The control method ``workflow.graph`` sends it as data (``Graph.to_json``),
so aiflowctl draws what the daemon serves.

The layout is layered, left to right: a box sits one column after the furthest box any
arrow comes from (rules that loop back, as a restart rule may, are left out of that
count), and within a column boxes follow the mean row of what points at them, so arrows
cross less. It is small on purpose: no Graphviz needed to look at a workflow.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

from aiflowd.model import AllEventsCondition, EventCondition, JobStatusCondition, Workflow

#: Box fill by last status (None: never ran).
COLOURS = {
    "FINISHED": "#b7e4c7",
    "FAILED": "#f4a6a6",
    "RUNNING": "#a9cdf5",
    "UNREACHABLE": "#f5c9a9",  # running, its cluster silent
    "INIT": "#fbe7a1",
    "KILLED": "#d9c2a7",
    None: "#eeeeee",
}
FORMATS = ("text", "dot", "mermaid", "svg")

# Sizes of the SVG drawing, in pixels.
BOX_W, BOX_H = 170, 46
COL_GAP, ROW_GAP, MARGIN = 140, 34, 20


@dataclass
class Node:
    """A box: a job (``kind`` job), a node of a job (``node``) or an event rules wait for (``event``)."""

    id: str
    label: str
    kind: str = "job"
    detail: str = ""
    status: str | None = None
    layer: int = 0
    row: int = 0


@dataclass
class Edge:
    """An arrow: a rule (``rule``), a DataEdge (``data``) or a node belonging to its job (``part``)."""

    source: str
    target: str
    label: str
    kind: str = "rule"


@dataclass
class Graph:
    workflow: str
    version: str | None = None
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "version": self.version,
            "nodes": [asdict(n) for n in self.nodes],
            "edges": [asdict(e) for e in self.edges],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Graph:
        return cls(
            data["workflow"],
            data.get("version"),
            [Node(**n) for n in data.get("nodes", [])],
            [Edge(**e) for e in data.get("edges", [])],
        )

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


def build(workflow: Workflow, statuses: dict[str, str] | None = None) -> Graph:
    """The graph of ``workflow``, its boxes coloured by ``statuses`` (job name -> last status), laid out."""
    statuses = statuses or {}
    graph = Graph(workflow.name, workflow.version)
    for job, sub in workflow.jobs.items():
        detail = sub.config.job_type
        if sub.config.periodic_config is not None:
            periodic = sub.config.periodic_config
            detail += f", every {periodic.interval_seconds:g}s" if periodic.interval_seconds else f", cron {periodic.cron}"
        graph.nodes.append(Node(job, job, "job", detail, statuses.get(job)))
    events: dict[str, str] = {}

    def event_node(condition: EventCondition) -> str:
        label = condition.key if condition.value == "*" else f"{condition.key}={condition.value}"
        node_id = "event:" + label
        if node_id not in events:
            events[node_id] = label
            graph.nodes.append(Node(node_id, label, "event", "event"))
        return node_id

    for rule in workflow.rules:
        action = str(rule.action.value if hasattr(rule.action, "value") else rule.action)
        condition = rule.condition
        if isinstance(condition, JobStatusCondition):
            status = "any end" if condition.status == "*" else condition.status
            graph.edges.append(Edge(condition.upstream_job, rule.job, f"{status} → {action}"))
        elif isinstance(condition, EventCondition):
            graph.edges.append(Edge(event_node(condition), rule.job, action))
        elif isinstance(condition, AllEventsCondition):
            for wanted in condition.events:
                graph.edges.append(Edge(event_node(wanted), rule.job, f"all of {len(condition.events)} → {action}"))
    for job, sub in workflow.jobs.items():
        if not sub.edges:
            continue  # a job of one node: the box says it all
        for node_id, node in sub.nodes.items():
            graph.nodes.append(Node(f"{job}/{node_id}", node.name or node_id, "node", job))
        for node_id in sub.nodes:
            if not sub.inputs_of(node_id):
                graph.edges.append(Edge(job, f"{job}/{node_id}", "runs", "part"))
        for edge in sub.edges:
            graph.edges.append(Edge(f"{job}/{edge.source}", f"{job}/{edge.destination}", f"data {edge.port}", "data"))
    graph.edges = _merged(graph.edges)
    layout(graph)
    return graph


def _merged(edges: list[Edge]) -> list[Edge]:
    """One arrow per pair of boxes and kind, its labels joined: parallel arrows would hide each other."""
    merged: dict[tuple[str, str, str], Edge] = {}
    for edge in edges:
        key = (edge.source, edge.target, edge.kind)
        if key in merged:
            if edge.label not in merged[key].label.split(", "):
                merged[key].label += ", " + edge.label
        else:
            merged[key] = Edge(edge.source, edge.target, edge.label, edge.kind)
    return list(merged.values())


def layout(graph: Graph) -> None:
    """Give every node its column (``layer``) and ``row``: longest path, back edges left out."""
    order = [n.id for n in graph.nodes]
    successors: dict[str, list[str]] = {n: [] for n in order}
    for edge in graph.edges:
        if edge.source in successors and edge.target in successors and edge.source != edge.target:
            successors[edge.source].append(edge.target)
    # Depth-first from each node in declaration order: an edge to a node on the stack closes a cycle.
    state: dict[str, int] = {}
    forward: dict[str, list[str]] = {n: [] for n in order}
    finished: list[str] = []
    for root in order:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, index = stack.pop()
            if index < len(successors[node]):
                stack.append((node, index + 1))
                child = successors[node][index]
                if state.get(child) == 1:
                    continue  # a back edge
                forward[node].append(child)
                if child not in state:
                    state[child] = 1
                    stack.append((child, 0))
            else:
                state[node] = 2
                finished.append(node)
    layer = dict.fromkeys(order, 0)
    for node in reversed(finished):  # a topological order of the forward edges
        for child in forward[node]:
            layer[child] = max(layer[child], layer[node] + 1)
    columns: dict[int, list[str]] = {}
    for node in order:
        columns.setdefault(layer[node], []).append(node)
    predecessors: dict[str, list[str]] = {n: [] for n in order}
    for node, children in forward.items():
        for child in children:
            predecessors[child].append(node)
    row: dict[str, float] = {}
    for column in sorted(columns):
        nodes = columns[column]
        for index, node in enumerate(nodes):
            above = [row[p] for p in predecessors[node] if p in row]
            row[node] = sum(above) / len(above) if above else float(index)
        nodes.sort(key=lambda n: (row[n], order.index(n)))
        for index, node in enumerate(nodes):
            row[node] = index
    for node_obj in graph.nodes:
        node_obj.layer, node_obj.row = layer[node_obj.id], int(row[node_obj.id])


def render(graph: Graph, fmt: str) -> str:
    """``graph`` drawn as ``fmt`` (one of ``FORMATS``)."""
    return {"text": to_text, "dot": to_dot, "mermaid": to_mermaid, "svg": to_svg}[fmt](graph)


def to_text(graph: Graph) -> str:
    """Columns of boxes, then the arrows: a picture a terminal can show."""
    lines = [f"workflow {graph.workflow}" + (f" (version {graph.version})" if graph.version else "")]
    for column in sorted({n.layer for n in graph.nodes}):
        lines.append(f"step {column + 1}:")
        for node in sorted((n for n in graph.nodes if n.layer == column), key=lambda n: n.row):
            mark = {"job": "[{}]", "node": "({})", "event": "<{}>"}[node.kind].format(node.label)
            status = node.status or ("never ran" if node.kind == "job" else "")
            lines.append(f"  {mark}  {node.detail}  {status}".rstrip())
    if graph.edges:
        lines.append("arrows:")
        for edge in graph.edges:
            lines.append(f"  {_name(graph, edge.source)} --{edge.label}--> {_name(graph, edge.target)}")
    return "\n".join(lines) + "\n"


def _name(graph: Graph, node_id: str) -> str:
    node = next((n for n in graph.nodes if n.id == node_id), None)
    if node is None:
        return node_id
    return {"job": "[{}]", "node": "({})", "event": "<{}>"}[node.kind].format(node.id if node.kind == "node" else node.label)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph) -> str:
    """Graphviz ``dot``: ``aiflowctl workflow graph WF --format dot | dot -Tpng``."""
    shapes = {"job": "box", "node": "box", "event": "ellipse"}
    lines = [f"digraph {_quote(graph.workflow)} {{", "  rankdir=LR;", '  node [fontname="sans-serif"];']
    for node in graph.nodes:
        detail = "\\n" + _quote(node.detail)[1:-1] if node.kind == "job" and node.detail else ""
        label = _quote(node.label)[:-1] + detail + '"'
        style = "filled,dashed" if node.kind == "node" else "filled"
        lines.append(
            f"  {_quote(node.id)} [label={label}, "
            f'shape={shapes[node.kind]}, style="{style}", fillcolor="{COLOURS.get(node.status, COLOURS[None])}"];'
        )
    for edge in graph.edges:
        lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)} [label={_quote(edge.label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart, for Markdown documents that render it."""
    ids = {node.id: f"n{i}" for i, node in enumerate(graph.nodes)}
    lines = ["flowchart LR"]

    def text(value: str) -> str:
        return value.replace('"', "#quot;")

    for node in graph.nodes:
        label = text(node.label + (f" ({node.status})" if node.status else ""))
        lines.append(f'  {ids[node.id]}(["{label}"])' if node.kind == "event" else f'  {ids[node.id]}["{label}"]')
    for edge in graph.edges:
        lines.append(f'  {ids[edge.source]} -->|"{text(edge.label)}"| {ids[edge.target]}')
    for node in graph.nodes:
        if node.status:
            lines.append(f"  style {ids[node.id]} fill:{COLOURS.get(node.status, COLOURS[None])}")
    return "\n".join(lines) + "\n"


def to_svg(graph: Graph) -> str:
    """A standalone SVG element: boxes with class ``job``/``node``/``event``, arrows with their labels."""

    def box(node: Node) -> tuple[float, float]:
        return MARGIN + node.layer * (BOX_W + COL_GAP), MARGIN + node.row * (BOX_H + ROW_GAP)

    columns = max((n.layer for n in graph.nodes), default=0) + 1
    rows = max((n.row for n in graph.nodes), default=0) + 1
    width = 2 * MARGIN + columns * BOX_W + (columns - 1) * COL_GAP
    height = 2 * MARGIN + rows * BOX_H + (rows - 1) * ROW_GAP
    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        "<title>" + esc(f"workflow {graph.workflow}") + "</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    positions = {n.id: box(n) for n in graph.nodes}
    for edge in graph.edges:
        if edge.source not in positions or edge.target not in positions:
            continue
        (sx, sy), (tx, ty) = positions[edge.source], positions[edge.target]
        if edge.source == edge.target:
            x1, y1, x2, y2 = sx + BOX_W * 0.7, sy, sx + BOX_W * 0.3, sy
            path = f"M {x1} {y1} C {x1} {y1 - 40}, {x2} {y2 - 40}, {x2} {y2}"
            lx, ly = sx + BOX_W / 2, sy - 26
        elif tx > sx:  # forward: right side to left side
            x1, y1, x2, y2 = sx + BOX_W, sy + BOX_H / 2, tx, ty + BOX_H / 2
            path = f"M {x1} {y1} C {x1 + COL_GAP / 2} {y1}, {x2 - COL_GAP / 2} {y2}, {x2} {y2}"
            lx, ly = (x1 + x2) / 2, (y1 + y2) / 2 - 4
        else:  # back or within a column: a curve below the boxes
            x1, y1, x2, y2 = sx + BOX_W / 2, sy + BOX_H, tx + BOX_W / 2, ty + BOX_H
            bend = max(y1, y2) + ROW_GAP * 0.9
            path = f"M {x1} {y1} C {x1} {bend}, {x2} {bend}, {x2} {y2}"
            lx, ly = (x1 + x2) / 2, bend - 2
        dash = ' stroke-dasharray="4 3"' if edge.kind in ("data", "part") else ""
        out.append(
            f'<g class="edge edge-{edge.kind}"><path d="{path}" fill="none" stroke="#555"{dash} marker-end="url(#arrow)"/>'
            f'<text x="{lx:.0f}" y="{ly:.0f}" text-anchor="middle" fill="#333" font-size="11" paint-order="stroke" stroke="#fff" '
            f'stroke-width="3">{esc(edge.label)}</text></g>'
        )
    for node in graph.nodes:
        x, y = positions[node.id]
        fill = COLOURS.get(node.status, COLOURS[None])
        rx = 22 if node.kind == "event" else 6
        dash = ' stroke-dasharray="4 3"' if node.kind == "node" else ""
        second = node.status or ("never ran" if node.kind == "job" else node.detail)
        if node.kind == "job" and node.detail:
            second = f"{node.detail} · {second}"
        out.append(
            f'<g class="box {node.kind}" data-id="{esc(node.id)}" data-status="{esc(node.status or "")}">'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="{rx}" fill="{fill}" stroke="#444"{dash}/>'
            f'<text x="{x + BOX_W / 2}" y="{y + 19}" text-anchor="middle" font-weight="bold">{esc(_clip(node.label, 24))}</text>'
            f'<text x="{x + BOX_W / 2}" y="{y + 35}" text-anchor="middle" fill="#333" font-size="11">{esc(_clip(second, 30))}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"
