"""A workflow's picture: built once (aiflowd.graph), laid out in layers, drawn as text, dot, Mermaid and SVG,
and served by ``aiflowctl workflow graph`` from a real daemon."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiflowd import graph as graphs
from aiflowd.workflows.loader import WorkflowLoader

from .conftest import REPO, write
from .daemon_harness import Daemon

SVG = "{http://www.w3.org/2000/svg}"

CHAIN = """
extract:
  job_type: bash
  bash_command: "true"
transform:
  job_type: bash
  bash_command: "true"
  action_on_job_status:
    - {upstream_job: extract, upstream_job_status: FINISHED, action: START}
load:
  job_type: bash
  bash_command: "true"
  action_on_job_status:
    - {upstream_job: transform, upstream_job_status: FINISHED, action: START}
  action_on_event:
    - {event_key: refresh, action: RESTART}
report:
  job_type: bash
  bash_command: "true"
  action_on_job_status:
    - {upstream_job: extract, upstream_job_status: FINISHED, action: START}
extract_again:
  job_type: bash
  bash_command: "true"
  action_on_job_status:
    - {upstream_job: load, upstream_job_status: FAILED, action: START}
"""


def load(loader: WorkflowLoader, tmp_path: Path, name: str, text: str) -> graphs.Graph:
    loaded = loader.load(str(write(tmp_path / f"{name}.yaml", text)))
    return graphs.build(loaded.workflow, {"extract": "FINISHED", "transform": "FAILED"})


def test_layers_follow_the_rules_and_rows_follow_their_sources(loader: WorkflowLoader, tmp_path: Path) -> None:
    graph = load(loader, tmp_path, "chain", CHAIN)
    where = {n.id: (n.layer, n.row) for n in graph.nodes}
    assert where["extract"][0] == 0 and where["event:refresh"][0] == 0
    assert where["transform"][0] == 1 and where["report"][0] == 1
    assert where["load"][0] == 2 and where["extract_again"][0] == 3
    assert len(set(where.values())) == len(where)  # no two boxes in one place
    labels = {(e.source, e.target): e.label for e in graph.edges}
    assert labels[("extract", "transform")] == "FINISHED → START"
    assert labels[("load", "extract_again")] == "FAILED → START"
    assert labels[("event:refresh", "load")] == "RESTART"
    assert graph.node("extract").status == "FINISHED" and graph.node("load").status is None


def test_a_cycle_of_rules_is_drawn_with_a_back_arrow(loader: WorkflowLoader, tmp_path: Path) -> None:
    text = """
    a:
      job_type: bash
      bash_command: "true"
      action_on_job_status:
        - {upstream_job: b, upstream_job_status: FAILED, action: RESTART}
    b:
      job_type: bash
      bash_command: "true"
      action_on_job_status:
        - {upstream_job: a, upstream_job_status: FINISHED, action: START}
    """
    graph = load(loader, tmp_path, "loop", text)
    assert {n.id: n.layer for n in graph.nodes} == {"a": 0, "b": 1}
    svg = ET.fromstring(graphs.to_svg(graph))
    assert len(svg.findall(f".//{SVG}g[@class='edge edge-rule']")) == 2


def test_data_edges_are_arrows_between_the_nodes_of_a_job(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = tmp_path / "dataedge_demo"
    shutil.copytree(REPO / "examples" / "workflows" / "dataedge_demo", folder)
    graph = graphs.build(loader.load(str(folder)).workflow)
    data = [(e.source, e.target, e.label) for e in graph.edges if e.kind == "data"]
    assert data == [("train/split", "train/report", "data 0, data 1")]  # two DataEdges, one arrow
    assert [(e.source, e.target, e.label) for e in graph.edges if e.kind == "rule"] == [("train", "evaluate", "FINISHED → START")]
    assert {n.label for n in graph.nodes if n.kind == "node"} == {"split", "report"}
    parts = [e for e in graph.edges if e.kind == "part"]
    assert [(e.source, graph.node(e.target).label) for e in parts] == [("train", "split")]


def test_every_format_draws_the_same_graph(loader: WorkflowLoader, tmp_path: Path) -> None:
    graph = load(loader, tmp_path, "chain", CHAIN)
    assert graphs.Graph.from_json(graph.to_json()) == graph
    text = graphs.render(graph, "text")
    assert "[extract]  bash  FINISHED" in text and "[load] --FAILED → START--> [extract_again]" in text
    assert "<refresh> --RESTART--> [load]" in text
    dot = graphs.render(graph, "dot")
    assert dot.startswith('digraph "chain" {') and '"extract" -> "transform" [label="FINISHED → START"];' in dot
    assert '"extract" [label="extract\\nbash", shape=box' in dot
    mermaid = graphs.render(graph, "mermaid")
    assert mermaid.startswith("flowchart LR") and '-->|"FINISHED → START"|' in mermaid
    svg = ET.fromstring(graphs.render(graph, "svg"))
    boxes = svg.findall(f".//{SVG}g[@class='box job']")
    assert sorted(b.get("data-id") or "" for b in boxes) == ["extract", "extract_again", "load", "report", "transform"]
    fills = {b.get("data-id"): b.find(f"{SVG}rect").get("fill") for b in boxes}  # type: ignore[union-attr]
    assert fills["extract"] == graphs.COLOURS["FINISHED"] and fills["transform"] == graphs.COLOURS["FAILED"]
    assert fills["report"] == graphs.COLOURS[None]
    assert len(svg.findall(f".//{SVG}g[@class='box event']")) == 1
    assert len(svg.findall(f".//{SVG}g[@class='edge edge-rule']")) == len(graph.edges)


def test_names_are_escaped_in_every_format(loader: WorkflowLoader, tmp_path: Path) -> None:
    text = """
    j:
      job_type: bash
      bash_command: "true"
      action_on_event:
        - {event_key: 'a"<b>&', action: START}
    """
    graph = load(loader, tmp_path, "esc", text)
    ET.fromstring(graphs.to_svg(graph))  # well-formed
    assert '"event:a\\"<b>&"' in graphs.to_dot(graph)
    assert "#quot;" in graphs.to_mermaid(graph)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path)
    try:
        yield daemon
    finally:
        daemon.close()


def test_aiflowctl_workflow_graph(daemon: Daemon) -> None:
    daemon.write_workflow("chain.yaml", CHAIN)
    daemon.start()
    daemon.wait_jobs("chain", lambda rows: {(r["job"], r["status"]) for r in rows} >= {("load", "FINISHED"), ("report", "FINISHED")})
    text = daemon.ctl("workflow", "graph", "chain").stdout
    assert "workflow chain (version " in text and "[load]  bash  FINISHED" in text and "[extract_again]  bash  never ran" in text
    svg = ET.fromstring(daemon.ctl("workflow", "graph", "chain", "--format", "svg").stdout)
    assert len(svg.findall(f".//{SVG}g[@class='box job']")) == 5
    assert daemon.ctl("workflow", "graph", "chain", "--format", "dot").stdout.startswith('digraph "chain"')
    data = daemon.json("workflow", "graph", "chain")
    assert {n["id"]: n["status"] for n in data["nodes"] if n["kind"] == "job"}["transform"] == "FINISHED"
    missing = daemon.ctl("workflow", "graph", "nope", check=False)
    assert missing.returncode == 1 and missing.stderr == "aiflowctl: no workflow named 'nope'\n"
    daemon.write_workflow("broken.yaml", "j: [\n")
    daemon.wait_jobs("chain", lambda rows: daemon.known("broken"))
    invalid = daemon.ctl("workflow", "graph", "broken", check=False)
    assert invalid.returncode == 1 and "has no valid version to draw" in invalid.stderr
