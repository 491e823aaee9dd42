"""The job plugin contract and the registry that finds, validates and lists plugins.

A job plugin serves one ``job_type``: its ``JobGenerator`` turns a job's AISubGraph into a
``Job`` when a workflow is loaded, and its ``JobController`` runs that ``Job``. Names and
signatures are AIFlow's so that its plugins port with little change; controllers are
async here, and a plugin that keeps AIFlow's blocking methods still works (they run in a
worker thread). This module needs only the stdlib: job processes import it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiflowd.model import AINode, AISubGraph, JobConfig, Status

if TYPE_CHECKING:
    import importlib.metadata
    import logging

ENTRY_POINT_GROUP = "aiflowd.job_plugins"
BUILTIN_PLUGIN_MODULES = ("aiflowd.plugins.bash", "aiflowd.plugins.python", "aiflowd.plugins.flink")
_JOB_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


@dataclass
class WorkflowInfo:
    """A workflow the daemon serves; ``namespace`` is AIFlow's project name (aiflowd has none: 'default')."""

    workflow_name: str
    namespace: str = "default"
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkflowExecutionInfo:
    """One workflow execution, as AIFlow names it; ids are strings and dates seconds since the epoch."""

    workflow_execution_id: str
    workflow_info: WorkflowInfo | None = None
    status: Status = Status.INIT
    properties: dict[str, Any] = field(default_factory=dict)
    start_date: float | None = None
    end_date: float | None = None
    context: str | None = None


@dataclass
class JobExecutionInfo:
    """Which run this is: AIFlow's JobExecutionInfo, handed to controllers and processors."""

    workflow_name: str
    job_name: str
    workflow_execution_id: str
    job_execution_id: str
    attempt: int = 1
    status: Status = Status.INIT
    start_date: float | None = None
    end_date: float | None = None

    @property
    def workflow_execution(self) -> WorkflowExecutionInfo:
        """The execution this job run belongs to, as AIFlow's ``job_execution_info.workflow_execution``.

        It is running while one of its jobs runs; its ``context`` is ``execution_context``
        (aiflowd has no context extractors: a JSON object naming the execution).
        """
        return WorkflowExecutionInfo(
            workflow_execution_id=self.workflow_execution_id,
            workflow_info=WorkflowInfo(self.workflow_name),
            status=Status.RUNNING,
            context=self.execution_context,
        )

    @property
    def execution_context(self) -> str:
        """What aiflowd gives where AIFlow gives an execution's context: a JSON object of its ids.

        Bash jobs get it as ``WORKFLOW_EXECUTION_CONTEXT``, as AIFlow's bash jobs get theirs.
        """
        return json.dumps(
            {
                "workflow_name": self.workflow_name,
                "workflow_execution_id": self.workflow_execution_id,
                "job_name": self.job_name,
                "job_execution_id": self.job_execution_id,
            },
            sort_keys=True,
        )


@dataclass
class JobRuntimeEnv:
    """Where one job execution lives: its own working folder, its log file, the workflow's files.

    ``settings`` carries the daemon's knobs a controller may honour (``stop_grace_period``,
    ``job_env`` for the clean base environment, the ``flink`` section).
    """

    working_dir: str
    log_path: str
    workflow_dir: str
    job_execution_info: JobExecutionInfo
    settings: dict[str, Any] = field(default_factory=dict)
    #: A savepoint the job should start from: its previous version's, when a changed
    #: workflow restarted it (controllers that know savepoints honour it).
    restore_savepoint: str | None = None
    #: One savepoint per Flink job, in the order the program started them (None: that job
    #: left none), when the job was several; ``restore_savepoint`` is the first of them.
    restore_savepoints: list[str | None] | None = None
    #: Environment variables the execution gives its jobs: its parameters (``AIFLOWD_PARAM_*``)
    #: and the event that started the job (``AIFLOWD_EVENT_*``). Process controllers set them.
    variables: dict[str, str] = field(default_factory=dict)
    #: Where ``report_condition`` goes: set by the daemon (None: reports go nowhere).
    reporter: ConditionReporter | None = field(default=None, repr=False, compare=False)

    def report_condition(self, condition: str | None, detail: str = "", subject: str = "", since: float | None = None) -> None:
        """Tell the daemon how a running job fares when its status alone cannot say it.

        ``condition`` is shown instead of RUNNING while set (``UNREACHABLE``: the job's
        cluster does not answer, its fate is unknown); None clears it. The job stays
        running for rules and scheduling: only its end (the controller's result) ends it.
        ``detail`` says why, ``subject`` what the condition is about (a cluster's URL),
        ``since`` when it began (epoch seconds). Callable from the event loop or from a
        blocking controller's worker thread; a report for an ended job is ignored.
        """
        if self.reporter is not None:
            self.reporter(condition, detail, subject, since)

    @property
    def workflow_name(self) -> str:
        return self.job_execution_info.workflow_name

    @property
    def job_name(self) -> str:
        return self.job_execution_info.job_name

    @property
    def log_dir(self) -> str:
        return os.path.dirname(self.log_path)

    @property
    def resource_dir(self) -> str:
        """``working_dir/resources``: the workflow's assets, as AIFlow's jobs find them.

        AIFlow links its project's ``resources/`` folder there; an aiflowd workflow folder
        is its own project, so ``make_working_dir`` links the workflow folder's
        ``resources/`` (when it has one) there.
        """
        return os.path.join(self.working_dir, RESOURCES)

    @property
    def generated_dir(self) -> str:
        """A folder of this execution for what a generator or controller writes (created on demand)."""
        return os.path.join(self.working_dir, "generated")

    @property
    def dependencies_dir(self) -> str:
        """The workflow's ``dependencies/`` folder, as AIFlow's project layout has it."""
        return os.path.join(self.workflow_dir, "dependencies")

    @property
    def python_dep_dir(self) -> str:
        """Python files the job imports: ``dependencies/python``."""
        return os.path.join(self.dependencies_dir, "python")

    @property
    def jar_dep_dir(self) -> str:
        """Jars the job needs: ``dependencies/jar``."""
        return os.path.join(self.dependencies_dir, "jar")


#: What ``JobRuntimeEnv.report_condition`` calls: ``(condition, detail, subject, since)``.
ConditionReporter = Callable[[str | None, str, str, float | None], None]

#: The condition of a running job whose cluster does not answer (see ``report_condition``).
UNREACHABLE = "UNREACHABLE"

#: The folder of a job's working dir holding the workflow's assets (a link to ``WORKFLOW/resources``).
RESOURCES = "resources"


def make_working_dir(env: JobRuntimeEnv) -> None:
    """Make an execution's working folder as AIFlow's jobs expect it.

    With ``resources``: a symbolic link to the workflow folder's ``resources/``, when the
    workflow has one (AIFlow links its project's ``resources/`` the same way). A link,
    not a copy: the assets are read in place, whatever their size, and a job sees the
    workflow's files as they are now.
    """
    os.makedirs(env.working_dir, exist_ok=True)
    source = os.path.join(env.workflow_dir, RESOURCES)
    link = env.resource_dir
    if env.workflow_dir and os.path.isdir(source) and not os.path.lexists(link):
        with contextlib.suppress(FileExistsError):
            os.symlink(source, link)


class Job:
    """What a generator makes of one job and a controller runs; plugins subclass it."""

    def __init__(self, job_config: JobConfig) -> None:
        self.job_config = job_config

    @property
    def job_name(self) -> str:
        return self.job_config.job_name

    @property
    def job_type(self) -> str:
        return self.job_config.job_type


class JobHandle:
    """A running job execution as its controller knows it; plugins subclass it.

    ``to_json`` gives what the store keeps so that a restarted daemon can ``reattach``:
    by default every JSON-serializable attribute but the job itself.
    """

    def __init__(self, job: Job, job_execution: JobExecutionInfo) -> None:
        self.job = job
        self.job_execution = job_execution

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for key, value in vars(self).items():
            if key in ("job", "job_execution") or key.startswith("_"):
                continue
            with contextlib.suppress(TypeError, ValueError):
                json.dumps(value)
                record[key] = value
        return record


class JobGenerator(ABC):
    """Turns a job's AISubGraph into a ``Job`` at load time, rejecting processors it cannot run."""

    @abstractmethod
    def generate(self, sub_graph: AISubGraph, job_config: JobConfig | None = None, resource_dir: str | None = None) -> Job:
        """Return the runnable job; raise ``JobGenerationError`` naming the node that is wrong.

        aiflowd calls ``generate(sub_graph=..., job_config=..., resource_dir=...)``, or
        AIFlow's ``generate(sub_graph, resource_dir)`` when the generator takes no
        ``job_config``. ``generation_inputs`` lets one method accept both forms.
        """


def generation_inputs(sub_graph: AISubGraph, job_config: JobConfig | str | None, resource_dir: str | None) -> tuple[JobConfig, str | None]:
    """The job config and resource folder of a ``generate`` call made in either form.

    AIFlow's ``generate(sub_graph, resource_dir)`` puts the folder second; the config is
    then the sub-graph's own.
    """
    if isinstance(job_config, str):
        job_config, resource_dir = None, job_config
    return (job_config if job_config is not None else sub_graph.config), resource_dir


class JobController(ABC):
    """Runs the jobs of one job type. Methods are async; blocking ones run in a worker thread."""

    @property
    def log(self) -> logging.Logger:
        """A logger named after the controller's class, as AIFlow's controllers have one."""
        import logging  # here: the fork server must not import it (it brings threading, whose fork hook every child pays)

        cls = type(self)
        return logging.getLogger(f"{cls.__module__}.{cls.__qualname__}")

    @abstractmethod
    async def submit_job(self, job: Job, job_runtime_env: JobRuntimeEnv) -> JobHandle:
        """Start a job execution and return its handle as soon as it runs."""

    @abstractmethod
    async def stop_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv) -> None:
        """Stop a job execution; returns when it no longer runs."""

    @abstractmethod
    async def cleanup_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv) -> None:
        """Release what the execution left behind (stray processes, temporary files)."""

    @abstractmethod
    async def get_result(self, job_handle: JobHandle, blocking: bool = True) -> object:
        """The job's result; with ``blocking`` wait for the end, otherwise None while it runs."""

    @abstractmethod
    async def get_job_status(self, job_handle: JobHandle) -> Status:
        """The job execution's status as of now."""

    def stop_timeout(self, job_runtime_env: JobRuntimeEnv) -> float:
        """How long ``stop_job`` may take before aiflowd stops waiting for it (a savepoint may take long)."""
        return float(job_runtime_env.settings.get("stop_grace_period", 10.0))

    async def get_job_log(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv) -> str:
        """The path of the execution's log file (controllers with remote logs may fetch them there)."""
        return job_runtime_env.log_path

    async def reattach(self, handle_record: dict[str, Any], job_runtime_env: JobRuntimeEnv) -> JobHandle | None:
        """Take over an execution that outlived the process that started it.

        ``handle_record`` is what ``JobHandle.to_json`` gave. Return None when the execution
        cannot be found; the default knows no way to find one.
        """
        return None


#: How ``nodes_from_yaml`` reports a problem: ``problem(key, message)``, ``key`` a key of
#: the job's YAML mapping (dotted for one inside it, like ``args.0``).
YamlProblem = Callable[[str, str], None]


class JobPluginFactory(ABC):
    """Gives the generator and controller of one job type, and optionally its YAML form.

    The three YAML methods are optional: a job type without them is defined in Python
    (``user_define_operation``) or by a ``processor: module:Class`` key.
    """

    @abstractmethod
    def job_type(self) -> str: ...

    @abstractmethod
    def get_job_generator(self) -> JobGenerator: ...

    @abstractmethod
    def get_job_controller(self) -> JobController: ...

    def yaml_keys(self) -> set[str]:
        """The keys a job of this type may have in the workflow YAML besides the generic ones
        (``job_type``, ``properties``, ``processor``, ``args``, rules, schedules, ...)."""
        return set()

    def nodes_from_yaml(self, job_name: str, job_yaml: dict[str, Any], workflow_dir: str, problem: YamlProblem) -> list[AINode] | None:
        """The nodes of a job given by its YAML keys alone, or None when it has none of them.

        ``job_yaml`` is the job's whole mapping. Report what is wrong with ``problem`` (the
        loader shows it at the key's line) and return None or the nodes that could be made.
        """
        return None

    def processor_classes(self) -> tuple[type, ...]:
        """The processor classes this job type runs: a job defined in Python with no YAML
        entry gets this job type when all its processors are of these classes."""
        return ()


class JobGenerationError(Exception):
    """A job cannot be generated from its graph; ``node`` names the culprit when there is one."""

    def __init__(self, message: str, node: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.key = key


def generate_job(generator: Any, sub_graph: AISubGraph, resource_dir: str) -> Job:
    """Call a generator with aiflowd's signature, or AIFlow's ``generate(sub_graph, resource_dir)``."""
    generate = getattr(generator.generate, "__func__", generator.generate)  # a method: asked once per class
    try:
        takes_job_config = _takes_job_config(generate)
    except TypeError:  # an unhashable callable: asked each time
        takes_job_config = _takes_job_config.__wrapped__(generate)
    if takes_job_config:
        return generator.generate(sub_graph=sub_graph, job_config=sub_graph.config, resource_dir=resource_dir)
    return generator.generate(sub_graph, resource_dir=resource_dir)


@functools.lru_cache(maxsize=256)
def _takes_job_config(function: Any) -> bool:
    """Whether ``function`` takes ``job_config``; cached, as ``inspect.signature`` cost more than the rest of generating a job."""
    import inspect

    try:
        return "job_config" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def job_nodes_from_yaml(
    info: PluginInfo, job_name: str, job_yaml: dict[str, Any], workflow_dir: str, problem: YamlProblem
) -> list[AINode] | None:
    """Ask a job type for the nodes of a YAML-only job (None when it has no YAML form)."""
    hook = getattr(info.factory, "nodes_from_yaml", None)
    if not callable(hook):
        return None
    return hook(job_name, job_yaml, workflow_dir, problem)


def claims_processors(info: PluginInfo, processors: Iterable[Any]) -> bool:
    """Whether all ``processors`` are of the classes ``info``'s job type runs.

    A processor the loader holds by reference (user code) is matched by its class's MRO.
    """
    classes = info.processor_classes
    if not classes:
        return False
    for processor in processors:
        is_a = getattr(processor, "is_a", None)
        if callable(is_a) and not isinstance(processor, classes):
            if not any(is_a(cls) for cls in classes):
                return False
        elif not isinstance(processor, classes):
            return False
    return True


class PluginError(Exception):
    """A plugin module failed to import, or registered something that breaks the contract."""

    def __init__(self, module: str, message: str) -> None:
        super().__init__(f"plugin module {module}: {message}")
        self.module = module
        self.message = message


@dataclass(frozen=True)
class PluginInfo:
    """A registered job type and where it came from, as ``aiflowctl plugins`` lists it."""

    job_type: str
    factory: Any = dataclasses.field(repr=False, compare=False)
    generator: Any = dataclasses.field(repr=False, compare=False)
    controller: Any = dataclasses.field(repr=False, compare=False)
    class_name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    #: The job type's own YAML keys (``JobPluginFactory.yaml_keys``).
    yaml_keys: frozenset[str] = frozenset()
    #: The processor classes it runs (``JobPluginFactory.processor_classes``).
    processor_classes: tuple[type, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "job_type": self.job_type,
            "class": self.class_name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
        }


_REQUIRED_CONTROLLER_METHODS = ("submit_job", "stop_job", "cleanup_job", "get_result", "get_job_status")
#: The module attribute ``register_job_plugin_factory`` records a module's factories in.
RECORD_ATTRIBUTE = "__aiflowd_job_plugins__"


def register_job_plugin_factory(plugin_factory: JobPluginFactory) -> None:
    """Announce a job plugin; called at import time from a plugin module, as in AIFlow.

    Nothing is registered here: the factory is recorded in the calling module. A registry
    that loads the module (``plugin_modules``, an entry point, the built-ins) reads the
    record, validates every factory in it and registers all of them or none. Importing
    the module again, or from several registries, therefore needs no re-execution.
    """
    caller = sys._getframe(1).f_globals
    recorded = caller.get(RECORD_ATTRIBUTE)
    if not isinstance(recorded, list):
        recorded = caller[RECORD_ATTRIBUTE] = []
    recorded.append(plugin_factory)


def recorded_factories(module_name: str) -> list[Any]:
    """What a loaded module and its submodules recorded with ``register_job_plugin_factory``."""
    found: list[Any] = []
    prefix = module_name + "."
    for name, module in list(sys.modules.items()):
        if module is None or (name != module_name and not name.startswith(prefix)):
            continue
        for factory in getattr(module, RECORD_ATTRIBUTE, None) or ():
            if not any(factory is seen for seen in found):
                found.append(factory)
    return found


class PluginRegistry:
    """The job types this process knows. Registration validates; discovery never raises.

    Every job type, built-in or not, arrives the same way: a module is imported, the
    factories it recorded are validated together, and only then registered together.
    """

    def __init__(self) -> None:
        self._plugins: dict[str, PluginInfo] = {}
        self._modules: set[str] = set()

    def __contains__(self, job_type: str) -> bool:
        return job_type in self._plugins

    def __iter__(self) -> Iterator[PluginInfo]:
        return iter(sorted(self._plugins.values(), key=lambda info: info.job_type))

    @property
    def modules(self) -> set[str]:
        """The plugin modules loaded into this registry."""
        return set(self._modules)

    def job_types(self) -> list[str]:
        return sorted(self._plugins)

    def get(self, job_type: str) -> PluginInfo:
        return self._plugins[job_type]

    def yaml_keys(self) -> set[str]:
        """The YAML keys of all job types (for a job whose type is not known)."""
        return set().union(*(info.yaml_keys for info in self._plugins.values()))

    def register(
        self,
        factory: Any,
        *,
        module: str | None = None,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Validate a factory and add its job type; a broken or duplicate one raises PluginError."""
        module = module or type(factory).__module__
        [info] = self.register_all([factory], module, distribution, version)
        return info

    def register_all(
        self, factories: list[Any], module: str, distribution: str | None = None, version: str | None = None
    ) -> list[PluginInfo]:
        """Validate all factories of one module, then register all of them; on any error, none.

        Raises PluginError naming the module (and, for a duplicate job type, the module that
        has it already).
        """
        infos = [_validate_factory(factory, module, distribution, version) for factory in factories]
        seen: dict[str, PluginInfo] = {}
        for info in infos:
            existing = self._plugins.get(info.job_type) or seen.get(info.job_type)
            if existing is not None:
                raise PluginError(
                    module,
                    f"job type '{info.job_type}' is already registered by {existing.class_name} from module {existing.module}",
                )
            seen[info.job_type] = info
        self._plugins.update(seen)
        return infos

    def unregister(self, job_type: str) -> None:
        self._plugins.pop(job_type, None)

    def load_builtin(self) -> list[PluginError]:
        """Register the job types shipped with aiflowd, through the same path as any plugin module."""
        errors: list[PluginError] = []
        for name in BUILTIN_PLUGIN_MODULES:
            errors.extend(self.load_module(name, "aiflowd", _own_version()))
        return errors

    def load_module(self, name: str, distribution: str | None = None, version: str | None = None) -> list[PluginError]:
        """Import a plugin module and register the factories it recorded.

        A module imported before (by another registry, or by a test) is not executed again:
        what it recorded stays on it. A module that fails to import registers nothing.
        """
        if name in self._modules:
            return []
        if distribution is None:
            distribution, version = _distribution_of(name)
        _enable_aiflow_names()
        try:
            importlib.import_module(name)
        except BaseException as err:
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            return [PluginError(name, f"failed to import: {type(err).__name__}: {err}")]
        return self._register_module(name, recorded_factories(name), distribution, version)

    def load_entry_points(self, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None) -> list[PluginError]:
        """Load the plugins installed distributions announce in the ``aiflowd.job_plugins`` group.

        An entry point may name a module that registers on import (AIFlow's way), a factory
        class, or a factory instance; either way its module's factories are registered
        through ``load_module``'s path, with the distribution and its version.
        """
        import importlib.metadata  # slow to import; only discovery needs it

        _enable_aiflow_names()
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        errors: list[PluginError] = []
        for ep in entry_points:
            if ep.module in self._modules:
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist is not None else None
            dist_version = dist.version if dist is not None else None
            try:
                target = ep.load()
                if isinstance(target, type):
                    target = target()
            except Exception as err:  # noqa: BLE001 - third-party code may raise anything
                errors.append(PluginError(ep.module, f"entry point '{ep.name}' failed to load: {type(err).__name__}: {err}"))
                continue
            factories = recorded_factories(ep.module)
            if ep.attr and not any(target is factory for factory in factories):
                factories.append(target)
            errors.extend(self._register_module(ep.module, factories, dist_name, dist_version))
        return errors

    def discover(self, modules: Iterable[str] = (), paths: Iterable[str] = (), entry_points: bool = True) -> list[PluginError]:
        """Load built-in plugins, then ``plugin_paths``/``plugin_modules``, then entry points."""
        for path in paths:
            path = os.path.abspath(path)
            if path not in sys.path:
                sys.path.insert(0, path)
        errors = self.load_builtin()
        for name in modules:
            errors.extend(self.load_module(name))
        if entry_points:
            errors.extend(self.load_entry_points())
        return errors

    def _register_module(self, name: str, factories: list[Any], distribution: str | None, version: str | None) -> list[PluginError]:
        self._modules.add(name)
        if not factories:
            return [PluginError(name, "imported, but it registered no job plugin (call register_job_plugin_factory)")]
        try:
            self.register_all(factories, name, distribution, version)
        except PluginError as err:
            return [err]
        return []


def _validate_factory(factory: Any, module: str, distribution: str | None, version: str | None) -> PluginInfo:
    name = type(factory).__name__
    if isinstance(factory, type):
        raise PluginError(module, f"register_job_plugin_factory() got the class {factory.__name__}; pass an instance")
    for method in ("job_type", "get_job_generator", "get_job_controller"):
        if not callable(getattr(factory, method, None)):
            raise PluginError(module, f"{name} is not a JobPluginFactory: it has no {method}()")
    try:
        job_type = factory.job_type()
        generator = factory.get_job_generator()
        controller = factory.get_job_controller()
        yaml_keys = factory.yaml_keys() if callable(getattr(factory, "yaml_keys", None)) else set()
        classes = factory.processor_classes() if callable(getattr(factory, "processor_classes", None)) else ()
    except Exception as err:
        raise PluginError(module, f"{name} raised {type(err).__name__}: {err}") from err
    if not isinstance(job_type, str) or not _JOB_TYPE_RE.match(job_type):
        raise PluginError(module, f"{name}.job_type() returned {job_type!r}; expected a name like 'my_type'")
    if not callable(getattr(generator, "generate", None)):
        raise PluginError(module, f"{name}.get_job_generator() returned {type(generator).__name__}, which has no generate()")
    missing = [m for m in _REQUIRED_CONTROLLER_METHODS if not callable(getattr(controller, m, None))]
    if missing:
        raise PluginError(
            module,
            f"{name}.get_job_controller() returned {type(controller).__name__}, which lacks {', '.join(missing)}",
        )
    if isinstance(yaml_keys, str) or not all(isinstance(k, str) and k for k in yaml_keys):
        raise PluginError(module, f"{name}.yaml_keys() returned {yaml_keys!r}; expected a set of key names")
    if isinstance(classes, type) or not all(isinstance(c, type) for c in classes):
        raise PluginError(module, f"{name}.processor_classes() returned {classes!r}; expected a tuple of classes")
    return PluginInfo(
        job_type=job_type,
        factory=factory,
        generator=generator,
        controller=controller,
        class_name=f"{type(factory).__module__}.{type(factory).__qualname__}",
        module=module,
        distribution=distribution,
        version=version,
        yaml_keys=frozenset(yaml_keys),
        processor_classes=tuple(classes),
    )


def _enable_aiflow_names() -> None:
    """Let plugin modules written as AIFlow's docs show import ``ai_flow`` (never shadowing a real AIFlow)."""
    from aiflowd import compat

    compat.enable()


def _own_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("aiflowd")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    import importlib.metadata

    return dict(importlib.metadata.packages_distributions())


def _distribution_of(module: str) -> tuple[str | None, str | None]:
    """The installed distribution that ships a module, if any (None for plain module paths)."""
    import importlib.metadata

    top = module.split(".")[0]
    try:
        names = _packages_distributions().get(top)
    except Exception:  # noqa: BLE001 - broken metadata of unrelated packages must not matter
        return None, None
    if not names:
        return None, None
    try:
        return names[0], importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return names[0], None
