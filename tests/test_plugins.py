"""The plugin registry and discovery: loud, named errors; one broken plugin harms no other."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiflowd.plugin_interface import ENTRY_POINT_GROUP, PluginError, PluginRegistry

from .conftest import write

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
