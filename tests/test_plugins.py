"""The plugin registry and discovery: loud, named errors; one broken plugin harms no other."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiflowd.model import Status
from aiflowd.plugin_interface import ENTRY_POINT_GROUP, PluginError, PluginRegistry
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import LoaderSettings, WorkflowLoader

from .conftest import run_execution, write

PLUGINS = Path(__file__).parent / "plugins"

GOOD_PLUGIN = """
from aiflowd import Job, JobController, JobGenerator, JobPluginFactory, Status, register_job_plugin_factory

class Controller(JobController):
    async def submit_job(self, job, env): ...
    async def stop_job(self, handle, env): ...
    async def cleanup_job(self, handle, env): ...
    async def get_result(self, handle, blocking=True): ...
    async def get_job_status(self, handle): return Status.FINISHED

class Generator(JobGenerator):
    def generate(self, sub_graph, job_config, resource_dir=None):
        return Job(job_config)

class Factory(JobPluginFactory):
    def job_type(self): return {job_type!r}
    def get_job_generator(self): return Generator()
    def get_job_controller(self): return Controller()

register_job_plugin_factory(Factory())
"""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    return folder


def fresh(plugin_dir: Path, **modules: str) -> PluginRegistry:
    for name, source in modules.items():
        write(plugin_dir / f"{name}.py", source)
    return PluginRegistry()


def unique(name: str, tmp_path: Path) -> str:
    """Module names differ per test so that no import cache joins two tests."""
    return f"{name}_{abs(hash(str(tmp_path))) % 10**8}"


def test_plugin_module_registers_at_import(plugin_dir: Path, tmp_path: Path) -> None:
    name = unique("spark_plugin", tmp_path)
    registry = fresh(plugin_dir, **{name: GOOD_PLUGIN.format(job_type="spark")})
    assert registry.discover([name], [str(plugin_dir)], entry_points=False) == []
    info = registry.get("spark")
    assert (info.module, info.class_name, info.distribution) == (name, f"{name}.Factory", None)
    assert registry.job_types() == ["bash", "flink", "python", "spark"]


def test_duplicate_job_type_is_an_error_naming_both_modules(plugin_dir: Path, tmp_path: Path) -> None:
    name = unique("fake_bash", tmp_path)
    registry = fresh(plugin_dir, **{name: GOOD_PLUGIN.format(job_type="bash")})
    [error] = registry.discover([name], [str(plugin_dir)], entry_points=False)
    assert str(error) == (
        f"plugin module {name}: job type 'bash' is already registered by "
        "aiflowd.plugins.bash.BashJobPluginFactory from module aiflowd.plugins.bash"
    )
    assert registry.get("bash").module == "aiflowd.plugins.bash"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise ImportError('no module named pyspark')", "failed to import: ImportError: no module named pyspark"),
        ("def broken(:\n  pass", "failed to import: SyntaxError: "),
        ("x = 1", "imported, but it registered no job plugin (call register_job_plugin_factory)"),
        (
            "from aiflowd import register_job_plugin_factory\nclass F: pass\nregister_job_plugin_factory(F())",
            "F is not a JobPluginFactory: it has no job_type()",
        ),
        (
            GOOD_PLUGIN.format(job_type="x").replace("return Controller()", "return object()"),
            "Factory.get_job_controller() returned object, which lacks submit_job, stop_job, cleanup_job, get_result, get_job_status",
        ),
        (GOOD_PLUGIN.format(job_type="no spaces please"), "Factory.job_type() returned 'no spaces please'; expected a name like 'my_type'"),
    ],
    ids=["import-error", "syntax-error", "registers-nothing", "not-a-factory", "bad-controller", "bad-job-type"],
)
def test_broken_plugins_are_named_and_harm_no_other(plugin_dir: Path, tmp_path: Path, source: str, message: str) -> None:
    broken, good = unique("broken", tmp_path), unique("good", tmp_path)
    registry = fresh(plugin_dir, **{broken: source, good: GOOD_PLUGIN.format(job_type="good")})
    [error] = registry.discover([broken, good], [str(plugin_dir)], entry_points=False)
    assert isinstance(error, PluginError)
    assert error.module == broken
    assert message in str(error)
    assert "good" in registry and "bash" in registry


def test_failed_module_takes_back_what_it_registered(plugin_dir: Path, tmp_path: Path) -> None:
    name = unique("half", tmp_path)
    registry = fresh(plugin_dir, **{name: GOOD_PLUGIN.format(job_type="half") + "\nraise RuntimeError('late failure')\n"})
    [error] = registry.discover([name], [str(plugin_dir)], entry_points=False)
    assert "late failure" in str(error)
    assert "half" not in registry


def test_entry_points_of_an_installed_distribution(plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real distribution on sys.path (dist-info with entry_points.txt), found through importlib.metadata."""
    module, factory_module = unique("ep_plugin", tmp_path), unique("ep_factory", tmp_path)
    write(plugin_dir / f"{module}.py", GOOD_PLUGIN.format(job_type="ep_module"))
    write(
        plugin_dir / f"{factory_module}.py", GOOD_PLUGIN.format(job_type="ep_factory").replace("register_job_plugin_factory(Factory())", "")
    )
    dist_info = plugin_dir / "acme_aiflowd_plugins-1.2.3.dist-info"
    write(dist_info / "METADATA", "Metadata-Version: 2.1\nName: acme-aiflowd-plugins\nVersion: 1.2.3\n")
    write(dist_info / "entry_points.txt", f"[{ENTRY_POINT_GROUP}]\nmod = {module}\nfactory = {factory_module}:Factory\n")
    monkeypatch.syspath_prepend(str(plugin_dir))
    registry = PluginRegistry()
    assert registry.discover() == []
    for job_type, module_name in (("ep_module", module), ("ep_factory", factory_module)):
        info = registry.get(job_type)
        assert (info.module, info.distribution, info.version) == (module_name, "acme-aiflowd-plugins", "1.2.3")


def test_aiflowctl_plugins_lists_where_each_comes_from(tmp_path: Path) -> None:
    from .daemon_harness import Daemon

    daemon = Daemon(tmp_path, config=f"plugin_paths: [{PLUGINS}]\nplugin_modules: [touch_plugin, no_such_plugin]\n")
    try:
        daemon.start()
        rows = {row["job_type"]: row for row in daemon.json("plugins")}
        assert rows["touch"] == {
            "job_type": "touch",
            "class": "touch_plugin.TouchJobPluginFactory",
            "module": "touch_plugin",
            "distribution": None,
            "version": None,
        }
        assert rows["bash"]["distribution"] == "aiflowd"
        table = daemon.ctl("plugins").stdout.splitlines()
        assert table[0].split() == ["JOB_TYPE", "CLASS", "MODULE", "DISTRIBUTION", "VERSION"]
        # The broken module is named in the daemon's log; the daemon and the other plugins serve on.
        assert "no_such_plugin" in daemon.log() and "ModuleNotFoundError" in daemon.log()
    finally:
        daemon.close()


# -- registration: what a module records is validated whole, then registered whole -------------

TWO_FACTORIES = (
    GOOD_PLUGIN.format(job_type="first")
    + """
class Second(Factory):
    def job_type(self): return {second!r}
    def get_job_controller(self): return {controller}

register_job_plugin_factory(Second())
"""
)


def test_a_module_with_one_bad_factory_registers_none_of_them(plugin_dir: Path, tmp_path: Path) -> None:
    name = unique("two_factories", tmp_path)
    registry = fresh(plugin_dir, **{name: TWO_FACTORIES.format(second="second", controller="object()")})
    [error] = registry.discover([name], [str(plugin_dir)], entry_points=False)
    assert error.module == name
    assert "Second.get_job_controller() returned object, which lacks submit_job" in str(error)
    assert "first" not in registry and "second" not in registry


def test_a_module_registering_one_job_type_twice_registers_neither(plugin_dir: Path, tmp_path: Path) -> None:
    name = unique("twice", tmp_path)
    registry = fresh(plugin_dir, **{name: TWO_FACTORIES.format(second="first", controller="Controller()")})
    [error] = registry.discover([name], [str(plugin_dir)], entry_points=False)
    assert str(error) == f"plugin module {name}: job type 'first' is already registered by {name}.Factory from module {name}"
    assert "first" not in registry


def test_registering_records_in_the_module_and_each_registry_reads_the_record(plugin_dir: Path, tmp_path: Path) -> None:
    """No re-execution of the module: importing it once is enough for any number of registries."""
    import importlib
    import sys

    name = unique("counted", tmp_path)
    source = "import builtins\nbuiltins.aiflowd_imports = getattr(builtins, 'aiflowd_imports', 0) + 1\n" + TWO_FACTORIES.format(
        second="second", controller="Controller()"
    )
    write(plugin_dir / f"{name}.py", source)
    sys.path.insert(0, str(plugin_dir))
    try:
        import builtins

        builtins.aiflowd_imports = 0  # type: ignore[attr-defined]
        importlib.import_module(name)  # a plain import registers nothing anywhere
        assert "first" not in PluginRegistry()
        registries = [PluginRegistry(), PluginRegistry()]
        for registry in registries:
            assert registry.load_module(name) == []
            assert {"first", "second"} <= set(registry.job_types())
        assert builtins.aiflowd_imports == 1  # type: ignore[attr-defined]
    finally:
        sys.path.remove(str(plugin_dir))
        sys.modules.pop(name, None)


def test_builtin_job_types_come_through_the_same_path(registry: PluginRegistry) -> None:
    for job_type in ("bash", "python", "flink"):
        info = registry.get(job_type)
        assert (info.module, info.distribution) == (f"aiflowd.plugins.{job_type}", "aiflowd")
    assert registry.get("bash").yaml_keys == {"bash_command", "output_encoding"}
    assert registry.modules == {"aiflowd.plugins.bash", "aiflowd.plugins.python", "aiflowd.plugins.flink"}


def test_an_entry_point_module_with_a_bad_factory_registers_none_and_is_named(
    plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = unique("ep_two", tmp_path)
    write(plugin_dir / f"{module}.py", TWO_FACTORIES.format(second="ep_second", controller="object()"))
    dist_info = plugin_dir / "acme_two-0.1.dist-info"
    write(dist_info / "METADATA", "Metadata-Version: 2.1\nName: acme-two\nVersion: 0.1\n")
    write(dist_info / "entry_points.txt", f"[{ENTRY_POINT_GROUP}]\ntwo = {module}\n")
    monkeypatch.syspath_prepend(str(plugin_dir))
    registry = PluginRegistry()
    [error] = registry.discover()
    assert error.module == module and "Second.get_job_controller()" in str(error)
    assert "first" not in registry and "ep_second" not in registry


# -- a third-party job type with its own YAML keys ------------------------------------------------


@pytest.fixture
def copy_loader() -> WorkflowLoader:
    registry = PluginRegistry()
    assert registry.discover(["copy_plugin"], [str(PLUGINS)], entry_points=False) == []
    return WorkflowLoader(registry, LoaderSettings(compile_timeout=10, plugin_paths=[str(PLUGINS)]))


@pytest.mark.anyio
async def test_a_third_party_job_type_runs_yaml_only_jobs(copy_loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = tmp_path / "copying"
    write(folder / "data.txt", "payload\n")
    write(folder / "copying.yaml", "fetch:\n  job_type: copy\n  copy_from: data.txt\n  copy_to: got.txt\n")
    _, [run] = await run_execution(copy_loader, folder, tmp_path)
    assert run.status == Status.FINISHED
    # The plugin copies into its working folder without creating it: aiflowd made it.
    assert Path(run.env.working_dir, "got.txt").read_text() == "payload\n"


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        ("j:\n  job_type: copy\n  copy_form: data.txt\n", "c.yaml:3:3: j.copy_form: unknown key (did you mean 'copy_from'?)"),
        ("j:\n  job_type: copy\n  copy_from: 7\n", "c.yaml:3:3: j.copy_from: must name a file of the workflow folder"),
        ("j:\n  job_type: copy\n  copy_from: nope.txt\n", "c.yaml:3:3: j.copy_from: no file 'nope.txt' in the workflow folder"),
        (
            "j:\n  job_type: copy\n  copy_from: a\n  bash_command: b\n",
            "c.yaml:4:3: j.bash_command: unknown key (a key of job type bash, not copy)",
        ),
        ("j:\n  job_type: bash\n  copy_from: a\n", "c.yaml:3:3: j.copy_from: unknown key (a key of job type copy, not bash)"),
        (
            "j:\n  job_type: copy\n  copy_from: a\n  processor: m:C\n",
            "c.yaml:4:3: j.processor: give one of copy_from and processor, not both",
        ),
    ],
    ids=["near-miss-of-own-key", "hook-problem", "generator-problem", "other-types-key", "this-key-on-bash", "with-processor"],
)
def test_a_third_party_job_types_yaml_keys_are_checked(copy_loader: WorkflowLoader, tmp_path: Path, yaml: str, expected: str) -> None:
    path = write(tmp_path / "c.yaml", yaml)
    with pytest.raises(LoadError) as info:
        copy_loader.load(str(path))
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"{tmp_path}/{expected}"), first


def test_a_python_only_job_gets_the_job_type_whose_processors_it_uses(copy_loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = tmp_path / "flow"
    write(folder / "data.txt", "x\n")
    write(folder / "flow.yaml", "properties: {}\n")
    write(
        folder / "flow.py",
        """
        from aiflowd import job_config, user_define_operation
        from copy_plugin import CopyProcessor
        with job_config("fetch"):
            user_define_operation(processor=CopyProcessor("data.txt"))
        """,
    )
    loaded = copy_loader.load(str(folder))
    assert loaded.workflow.jobs["fetch"].config.job_type == "copy"
    assert loaded.jobs["fetch"].source == str(folder / "data.txt")  # type: ignore[attr-defined]


def test_the_generic_loader_imports_no_job_type() -> None:
    """Job types reach the loader only through the registry (a plugin's YAML works as a built-in's)."""
    import ast

    import aiflowd.workflows.loader as loader_module

    tree = ast.parse(Path(loader_module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not [name for name in imported if name.startswith("aiflowd.plugins")]


def test_a_yaml_hook_that_raises_fails_its_job_only(copy_loader: WorkflowLoader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    factory = copy_loader.registry.get("copy").factory

    def broken(job_name, job_yaml, workflow_dir, problem):  # type: ignore[no-untyped-def]
        raise KeyError("oops")

    monkeypatch.setattr(factory, "nodes_from_yaml", broken)
    path = write(tmp_path / "c.yaml", "j:\n  job_type: copy\n  copy_from: a\nk:\n  job_type: bash\n  bash_command: 'true'\n")
    with pytest.raises(LoadError) as info:
        copy_loader.load(str(path))
    assert str(info.value) == f"{path}:3:3: j.copy_from: plugin copy_plugin failed: KeyError: 'oops'"
