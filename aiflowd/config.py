"""The daemon's configuration: defaults, the YAML file, and systemd's directory variables.

Relative paths in a config file are relative to that file; without one, to the current
folder (``aiflowd`` alone serves ``./workflows`` with state in ``./.aiflowd``). Under
systemd, ``$STATE_DIRECTORY``, ``$LOGS_DIRECTORY`` and ``$RUNTIME_DIRECTORY`` supply the
defaults the file leaves open. ``etc/aiflowd.yaml`` documents every key.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiflowd.alerts import DEFAULT_MAX_CONCURRENT, HOOK_EVENTS, parse_hooks
from aiflowd.model import Hook, parse_duration
from aiflowd.workflows.errors import LoadError, Problem, suggest
from aiflowd.workflows.yamlfile import YamlDocument, format_path, read_yaml

SOCKET_NAME = "aiflowd.sock"
#: Where scripts/flink-cluster.sh serves by default. ``$AIFLOWD_FLINK_REST_URL`` (which
#: scripts/test.sh and scripts/run-examples.sh set to the cluster they start) supplies
#: ``flink.rest_url`` when the file gives none, as systemd's variables supply folders.
DEFAULT_FLINK_REST_URL = "http://127.0.0.1:8081"
FLINK_REST_URL_VARIABLE = "AIFLOWD_FLINK_REST_URL"
#: The keys of the ``flink`` section, each read by the flink job type; any other is a typo.
FLINK_KEYS = ("rest_url", "flink_home", "java_home", "conf_dir", "stop_timeout", "unreachable_timeout", "on_daemon_stop", "shared_files")
#: The keys of the ``http`` section (the read-only status pages and metrics; off without it).
HTTP_KEYS = ("listen", "refresh")
#: How often the status pages reload themselves, unless ``http.refresh`` says otherwise.
DEFAULT_HTTP_REFRESH = 5.0
#: How long finished executions (with their job executions and events), job logs and job
#: working folders are kept, and how often retention looks; ``0`` or ``never`` keeps one for ever.
DEFAULT_RETENTION: dict[str, float] = {"executions": 90 * 86400.0, "logs": 30 * 86400.0, "work_dirs": 7 * 86400.0, "interval": 3600.0}


@dataclass
class DaemonConfig:
    workflows_dir: str
    state_dir: str
    log_dir: str
    control_socket: str
    run_dir: str = ""
    control_group: str | None = None
    plugin_modules: list[str] = field(default_factory=list)
    plugin_paths: list[str] = field(default_factory=list)
    stop_grace_period: float = 10.0
    compile_timeout: float = 30.0
    control_idle_timeout: float = 30.0
    control_request_timeout: float = 5.0
    max_concurrent_jobs: int = 64
    #: How many Python definitions may compile at once (None: three per CPU warm, one cold).
    max_parallel_loads: int | None = None
    #: Definitions compile and Python jobs start in forks of a pre-imported fork server
    #: (True; "pyflink": PyFlink imported there too), or each in a new interpreter (False).
    warm_start: bool | str = True
    job_env: dict[str, str] = field(default_factory=dict)
    flink: dict[str, Any] = field(default_factory=dict)
    #: ``{"listen": "HOST:PORT" or a socket path, "refresh": seconds}``; empty: no HTTP.
    http: dict[str, Any] = field(default_factory=dict)
    #: Hooks for every workflow's jobs, by moment (``on_failure``, ``on_retry``, ``on_success``).
    hooks: dict[str, tuple[Hook, ...]] = field(default_factory=dict)
    #: How many hooks may be delivered at once; more wait their turn.
    max_concurrent_hooks: int = DEFAULT_MAX_CONCURRENT
    #: Seconds to keep ``executions``, ``logs`` and ``work_dirs`` (0: for ever), and the ``interval`` between passes.
    retention: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RETENTION))
    file: str | None = None

    def job_settings(self) -> dict[str, Any]:
        """What job controllers get in ``JobRuntimeEnv.settings``."""
        return {
            "stop_grace_period": self.stop_grace_period,
            "job_env": dict(self.job_env),
            "flink": dict(self.flink),
            "run_dir": self.run_dir,
            "warm_start": self.warm_start,
        }


_KEYS = {
    "workflows_dir",
    "state_dir",
    "log_dir",
    "control_socket",
    "run_dir",
    "control_group",
    "plugin_modules",
    "plugin_paths",
    "stop_grace_period",
    "compile_timeout",
    "control_idle_timeout",
    "control_request_timeout",
    "max_concurrent_jobs",
    "max_parallel_loads",
    "warm_start",
    "job_env",
    "flink",
    "http",
    "max_concurrent_hooks",
    *HOOK_EVENTS,
    "retention",
}


def load_config(path: str | None = None, environ: dict[str, str] | None = None) -> DaemonConfig:
    """Read the config file (or take the defaults); raise LoadError naming every bad key."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    base = os.getcwd()
    problems: list[Problem] = []
    doc = None
    if path is not None:
        path = os.path.abspath(path)
        base = os.path.dirname(path)
        doc = read_yaml(path)
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            raise LoadError([doc.problem((), "the config must be a mapping of keys to values")])
        data = doc.data
        for key in data:
            if key not in _KEYS:
                problems.append(doc.problem((key,), f"unknown key ({suggest(key, _KEYS)})"))

    def where(key: str, message: str) -> None:
        problems.append(_problem(doc, (key,), message))

    def path_of(key: str, default: str) -> str:
        value = data.get(key)
        if value is None:
            return os.path.abspath(default)
        if not isinstance(value, str) or not value:
            where(key, "must be a path")
            return os.path.abspath(default)
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))

    state_dir = path_of("state_dir", env.get("STATE_DIRECTORY", "").split(":")[0] or os.path.join(base, ".aiflowd"))
    runtime_dir = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    config = DaemonConfig(
        workflows_dir=path_of("workflows_dir", os.path.join(base, "workflows")),
        state_dir=state_dir,
        log_dir=path_of("log_dir", env.get("LOGS_DIRECTORY", "").split(":")[0] or os.path.join(state_dir, "logs")),
        control_socket=path_of("control_socket", os.path.join(runtime_dir or state_dir, SOCKET_NAME)),
        file=path,
    )
    config.run_dir = path_of("run_dir", runtime_dir or os.path.join(state_dir, "run"))
    for key in ("plugin_modules", "plugin_paths"):
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            where(key, "must be a list of names" if key == "plugin_modules" else "must be a list of folders")
            continue
        if key == "plugin_paths":
            value = [os.path.normpath(os.path.join(base, os.path.expanduser(v))) for v in value]
        setattr(config, key, value)
    for key in ("stop_grace_period", "compile_timeout", "control_idle_timeout", "control_request_timeout"):
        if key in data:
            try:
                setattr(config, key, parse_duration(data[key]))
            except ValueError as err:
                where(key, str(err))
                continue
            if key.startswith("control_") and getattr(config, key) <= 0:
                where(key, f"must be longer than 0, got {data[key]!r}")
    for key in ("max_concurrent_jobs", "max_concurrent_hooks"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                where(key, f"must be a whole number >= 1, got {value!r}")
            else:
                setattr(config, key, value)
    for key in HOOK_EVENTS:
        if data.get(key) is not None:
            config.hooks[key] = parse_hooks(data[key], (key,), lambda at, message: problems.append(_problem(doc, at, message)), cwd=base)
    if data.get("max_parallel_loads") is not None:
        value = data["max_parallel_loads"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            where("max_parallel_loads", f"must be a whole number >= 1 (or null: three per CPU warm, one cold), got {value!r}")
        else:
            config.max_parallel_loads = value
    if "warm_start" in data:
        value = data["warm_start"]
        if value not in (True, False, "pyflink"):
            where("warm_start", f"must be true, false or pyflink, got {value!r}")
        else:
            config.warm_start = value
    if data.get("control_group") is not None:
        config.control_group = str(data["control_group"])
    value = data.get("job_env")
    if value is not None:
        if not isinstance(value, dict):
            where("job_env", "must be a mapping")
        else:
            config.job_env = {str(k): "" if v is None else str(v) for k, v in value.items()}
    config.flink = _flink_section(data.get("flink"), base, env, doc, problems)
    config.http = _http_section(data.get("http"), base, doc, problems)
    config.retention = _retention_section(data.get("retention"), doc, problems)
    if problems:
        raise LoadError(problems)
    return config


def _problem(doc: YamlDocument | None, path: tuple[Any, ...], message: str) -> Problem:
    """A problem at ``path``: located in the config file, or of the defaults when there is none."""
    if doc is not None:
        return doc.problem(path, message)
    return Problem("<defaults>", 0, 0, format_path(path), message)


def _rest_url_problem(url: object) -> str | None:
    if not isinstance(url, str):
        return f"must be the cluster's REST URL, like {DEFAULT_FLINK_REST_URL}; got {url!r}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return f"must be an http:// or https:// URL with a host, like {DEFAULT_FLINK_REST_URL}; got {url!r}"
    try:
        parsed.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        return f"has a port that is not a number: {url!r}"
    return None


def _flink_section(value: Any, base: str, env: Mapping[str, str], doc: Any, problems: list[Problem]) -> dict[str, Any]:
    """The ``flink`` section, checked, with ``rest_url`` always set: the one place every part reads it from."""

    def where(key: str | None, message: str) -> None:
        problems.append(_problem(doc, ("flink",) if key is None else ("flink", key), message))

    if value is None:
        value = {}
    if not isinstance(value, dict):
        where(None, "must be a mapping")
        value = {}
    flink: dict[str, Any] = {}
    for key, item in value.items():
        if key not in FLINK_KEYS:
            where(str(key), f"unknown key ({suggest(str(key), FLINK_KEYS)})")
        elif key == "rest_url":
            problem = _rest_url_problem(item)
            if problem:
                where(key, problem)
            else:
                flink[key] = item.rstrip("/")
        elif key == "on_daemon_stop":
            if item in ("keep", "stop"):
                flink[key] = item
            else:
                where(key, f"must be keep or stop; got {item!r}")
        elif key == "shared_files":
            if isinstance(item, bool):
                flink[key] = item
            else:
                where(key, f"must be true or false; got {item!r}")
        elif key in ("stop_timeout", "unreachable_timeout"):
            try:
                flink[key] = parse_duration(item)
            except ValueError as err:
                where(key, str(err))
        elif not isinstance(item, str) or not item:
            where(key, "must be a path")
        else:
            flink[key] = os.path.normpath(os.path.join(base, os.path.expanduser(item)))
    if "rest_url" not in value:
        url = env.get(FLINK_REST_URL_VARIABLE) or DEFAULT_FLINK_REST_URL
        problem = _rest_url_problem(url)
        if problem:
            problems.append(Problem(f"${FLINK_REST_URL_VARIABLE}", 0, 0, "flink.rest_url", problem))
        flink["rest_url"] = url.rstrip("/")
    return flink


def _http_section(value: Any, base: str, doc: Any, problems: list[Problem]) -> dict[str, Any]:
    """The ``http`` section, checked: ``listen`` (``HOST:PORT``, or a Unix socket path) and ``refresh``."""

    def where(key: str | None, message: str) -> None:
        problems.append(_problem(doc, ("http",) if key is None else ("http", key), message))

    if value is None:
        return {}
    if not isinstance(value, dict):
        where(None, "must be a mapping like {listen: 127.0.0.1:8790}")
        return {}
    http: dict[str, Any] = {"refresh": DEFAULT_HTTP_REFRESH}
    for key in value:
        if key not in HTTP_KEYS:
            where(str(key), f"unknown key ({suggest(str(key), HTTP_KEYS)})")
    listen = value.get("listen")
    if not isinstance(listen, str) or not listen:
        if "listen" in value:
            where("listen", f"must be HOST:PORT (like 127.0.0.1:8790) or a socket path (with a /), got {listen!r}")
        else:
            where(None, "needs 'listen': HOST:PORT (like 127.0.0.1:8790) or a socket path")
    elif "/" in listen:
        http["listen"] = os.path.normpath(os.path.join(base, os.path.expanduser(listen)))
    else:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            where("listen", f"must be HOST:PORT (like 127.0.0.1:8790) or a socket path (with a /), got {listen!r}")
        else:
            http["listen"] = listen
    if "refresh" in value:
        try:
            http["refresh"] = parse_duration(value["refresh"])
        except ValueError as err:
            where("refresh", str(err))
    return http


def _retention_section(value: Any, doc: Any, problems: list[Problem]) -> dict[str, float]:
    """The ``retention`` section: a duration per kind of old data (``0``/``never``: kept), and ``interval``."""

    def where(key: str | None, message: str) -> None:
        problems.append(_problem(doc, ("retention",) if key is None else ("retention", key), message))

    retention = dict(DEFAULT_RETENTION)
    if value is None:
        return retention
    if not isinstance(value, dict):
        where(None, "must be a mapping like {executions: 90d, logs: 30d, work_dirs: 7d}")
        return retention
    for key, item in value.items():
        if key not in DEFAULT_RETENTION:
            where(str(key), f"unknown key ({suggest(str(key), tuple(DEFAULT_RETENTION))})")
            continue
        if key != "interval" and (item is None or (isinstance(item, str) and item.strip().lower() == "never")):
            retention[key] = 0.0
            continue
        try:
            retention[key] = parse_duration(item)
        except ValueError as err:
            where(key, str(err) + ("" if key == "interval" else " (or never)"))
            continue
        if key == "interval" and retention[key] <= 0:
            where(key, f"must be longer than 0, got {item!r}")
            retention[key] = DEFAULT_RETENTION[key]
    return retention
