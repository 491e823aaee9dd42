"""The workflow JSON Schema: it takes what the loader takes, refuses unknown keys, cannot drift.

Checked with the ``jsonschema`` package, as an editor's YAML server would check a file.
The documents are read with the loader's own YAML reader, so they are the data the loader
sees (dates stay strings, as there).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aiflowd.cli import aiflowd as aiflowd_cli
from aiflowd.plugin_interface import PluginRegistry
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import JOB_KEYS, PROCESSOR_KEYS, WORKFLOW_KEYS, LoaderSettings, WorkflowLoader
from aiflowd.workflows.schema import GENERIC_KEYS, TYPE_KEYS, builtin_keys, registry_keys, schema_text, workflow_schema
from aiflowd.workflows.yamlfile import read_yaml

from .conftest import REPO

EXAMPLES = REPO / "examples" / "workflows"


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    registry = PluginRegistry()
    assert registry.load_builtin() == []
    return registry


@pytest.fixture(scope="module")
def validator(registry: PluginRegistry) -> jsonschema.Draft7Validator:
    schema = workflow_schema(registry_keys(registry))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors(validator: jsonschema.Draft7Validator, data: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_the_schema_accepts_every_example(validator: jsonschema.Draft7Validator, path: Path) -> None:
    assert errors(validator, read_yaml(str(path)).data) == []


def _yaml_in_tests() -> list[tuple[str, str]]:
    """Workflow YAML the tests write: string constants of tests/ that read as a mapping with a job."""
    found = []
    for file in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and "job_type" in node.value and "\n" in node.value):
                continue
            try:
                data = read_yaml("t.yaml", node.value).data
            except LoadError:
                continue
            if isinstance(data, dict) and any(isinstance(v, dict) and "job_type" in v for v in data.values()):
                found.append((f"{file.relative_to(REPO)}:{node.lineno}", node.value))
    return found


def test_the_schema_accepts_every_workflow_of_the_tests_the_loader_accepts(
    validator: jsonschema.Draft7Validator, registry: PluginRegistry, tmp_path: Path
) -> None:
    loader = WorkflowLoader(registry, LoaderSettings(compile_timeout=30))
    accepted = 0
    for where, text in _yaml_in_tests():
        path = tmp_path / "wf.yaml"
        path.write_text(text)
        try:
            loader.load(str(path))
        except LoadError as err:
            # What the loader refuses for an unknown key, the schema refuses too.
            if any(p.message.startswith("unknown key (") for p in err.problems):
                assert errors(validator, read_yaml(str(path)).data) != [], f"{where}: the loader refuses {err}"
            continue
        accepted += 1
        assert errors(validator, read_yaml(str(path)).data) == [], f"{where}:\n{text}"
    assert accepted >= 20, accepted  # the tests hold many workflows: finding few means the search broke


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("job:\n  job_type: bash\n  bash_comand: echo hi\n", "bash_comand"),  # a typo
        ("job:\n  job_type: bash\n  bash_command: echo\n  sql: select 1\n", "sql"),  # another type's key
        ("job:\n  job_type: bsh\n  bash_command: echo\n", "job_type"),  # an unknown job type
        ("job:\n  job_type: bash\n  bash_command: echo\n  periodic_config: {cron: '* * * * *', crn: x}\n", "crn"),
        ("job:\n  job_type: bash\n  bash_command: echo\n  action_on_job_status: [{upstream_jb: a}]\n", "upstream_jb"),
        ("job:\n  job_type: bash\n  bash_command: echo\n  retries: -1\n", "retries"),
        ("on_change: sometimes\njob: {job_type: bash, bash_command: echo}\n", "on_change"),
        ("job: {bash_command: echo}\n", "job_type"),  # no job type
        ("bad name!: {job_type: bash, bash_command: echo}\n", "bad name!"),
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(
    validator: jsonschema.Draft7Validator, registry: PluginRegistry, tmp_path: Path, text: str, wrong: str
) -> None:
    found = errors(validator, read_yaml("wf.yaml", text).data)
    assert found, text
    assert any(wrong in line for line in found), found
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    with pytest.raises(LoadError):
        WorkflowLoader(registry).load(str(path))


def test_the_schemas_keys_are_the_loaders(registry: PluginRegistry) -> None:
    schema = workflow_schema(registry_keys(registry))
    assert set(schema["properties"]) == WORKFLOW_KEYS
    job = schema["definitions"]["job"]
    assert set(job["properties"]) == JOB_KEYS | PROCESSOR_KEYS | registry.yaml_keys()
    by_type = {branch["if"]["properties"]["job_type"]["const"]: set(branch["then"]["properties"]) for branch in job["allOf"]}
    assert by_type == {info.job_type: JOB_KEYS | PROCESSOR_KEYS | set(info.yaml_keys) for info in registry}
    assert job["properties"]["job_type"]["enum"] == registry.job_types()


def test_the_loader_takes_every_key_the_schema_offers_and_no_other(registry: PluginRegistry, tmp_path: Path) -> None:
    """Asked of the loader's behaviour, not of its constants: each job type with all its keys."""
    schema = workflow_schema(registry_keys(registry))
    loader = WorkflowLoader(registry)
    for branch in schema["definitions"]["job"]["allOf"]:
        job_type = branch["if"]["properties"]["job_type"]["const"]
        keys = set(branch["then"]["properties"]) - {"job_type"}
        job = "\n".join(f"  {key}: 1" for key in sorted(keys | {"not_a_key"}))
        path = tmp_path / f"{job_type}.yaml"
        path.write_text(f"job:\n  job_type: {job_type}\n{job}\n")
        with pytest.raises(LoadError) as caught:
            loader.load(str(path))
        unknown = {p.key.split(".")[-1] for p in caught.value.problems if p.message.startswith("unknown key (")}
        assert unknown == {"not_a_key"}, (job_type, caught.value)


def test_every_key_is_described(registry: PluginRegistry) -> None:
    schema = workflow_schema(registry_keys(registry))

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "properties":
                    for name, sub in value.items():
                        assert sub.get("description"), f"{where}.{name} has no description"
                        walk(sub, f"{where}.{name}")
                elif key in ("definitions", "patternProperties"):
                    for name, sub in value.items():
                        walk(sub, f"{where}.{name}")
                elif key != "if":  # an if names the key it tests, with no need of a description
                    walk(value, f"{where}.{key}")

    walk(schema, "schema")
    # No description for a key the loader does not have (a renamed key would leave one behind).
    used = {name.split(".", 1)[1] for name in GENERIC_KEYS}
    assert {name for name in used if name not in json.dumps(schema)} == set()
    assert {(t, k) for t, k in TYPE_KEYS if t not in registry or k not in registry.get(t).yaml_keys} == set()


def test_the_builds_job_types_are_the_registrys(registry: PluginRegistry) -> None:
    # The wheel's copy is written without making controllers; it must know the same keys.
    assert builtin_keys() == registry_keys(registry)


def test_aiflowd_schema_prints_it(registry: PluginRegistry, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "aiflowd.yaml"
    config.write_text(f"workflows_dir: {tmp_path}\n")
    assert aiflowd_cli.main(["--config", str(config), "schema"]) == 0
    assert capsys.readouterr().out == schema_text(registry_keys(registry))
    assert aiflowd_cli.main(["schema", "--builtin", "--output", str(tmp_path / "s.json")]) == 0
    assert (tmp_path / "s.json").read_text() == schema_text(builtin_keys())


def test_a_plugins_keys_join_the_schema(tmp_path: Path) -> None:
    registry = PluginRegistry()
    registry.discover(["tests.plugins.copy_plugin"], entry_points=False)
    schema = workflow_schema(registry_keys(registry))
    types = schema["definitions"]["job"]["properties"]["job_type"]["enum"]
    assert "bash" in types and len(types) > 3


def test_the_wheels_schema_is_the_generated_one(tmp_path: Path) -> None:
    """The build hook writes the schema with the built code: run it as the build does."""
    import subprocess
    import sys

    dest = tmp_path / "workflow.schema.json"
    result = subprocess.run(
        [sys.executable, "-m", "aiflowd.workflows.schema", str(dest)],
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert dest.read_text() == schema_text(builtin_keys())
