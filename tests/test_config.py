"""The daemon config: defaults, the documented file, systemd's directories, bad keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aiflowd.config import _KEYS, load_config
from aiflowd.workflows.errors import LoadError

from .conftest import REPO, write


def test_documented_config_loads_and_documents_every_key() -> None:
    path = REPO / "etc" / "aiflowd.yaml"
    config = load_config(str(path))
    assert config.workflows_dir == str(REPO / "etc" / "workflows")
    assert config.stop_grace_period == 10.0 and config.max_concurrent_jobs == 64
    documented = set(re.findall(r"^#? ?([a-z_]+):", path.read_text(), re.M))
    assert _KEYS <= documented, _KEYS - documented


def test_defaults_and_systemd_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert (config.workflows_dir, config.state_dir, config.log_dir) == (
        str(tmp_path / "workflows"),
        str(tmp_path / ".aiflowd"),
        str(tmp_path / ".aiflowd" / "logs"),
    )
    assert config.control_socket == str(tmp_path / ".aiflowd" / "aiflowd.sock")
    config = load_config(
        None, environ={"STATE_DIRECTORY": "/var/lib/aiflowd", "LOGS_DIRECTORY": "/var/log/aiflowd", "RUNTIME_DIRECTORY": "/run/aiflowd"}
    )
    assert (config.state_dir, config.log_dir, config.run_dir, config.control_socket) == (
        "/var/lib/aiflowd",
        "/var/log/aiflowd",
        "/run/aiflowd",
        "/run/aiflowd/aiflowd.sock",
    )


def test_bad_keys_are_located(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "stop_grace_perod: 5\nmax_concurrent_jobs: 0\nplugin_modules: notalist\n")
    with pytest.raises(LoadError) as info:
        load_config(str(path))
    assert [str(p) for p in info.value.problems] == [
        f"{path}:1:1: stop_grace_perod: unknown key (did you mean 'stop_grace_period'?)",
        f"{path}:3:1: plugin_modules: must be a list of names",
        f"{path}:2:1: max_concurrent_jobs: must be a whole number >= 1, got 0",
    ]


def test_control_timeouts(tmp_path: Path) -> None:
    assert (load_config(None, environ={}).control_idle_timeout, load_config(None, environ={}).control_request_timeout) == (30.0, 5.0)
    config = load_config(str(write(tmp_path / "ok.yaml", "control_idle_timeout: 2m\ncontrol_request_timeout: 0.5\n")))
    assert (config.control_idle_timeout, config.control_request_timeout) == (120.0, 0.5)
    path = write(tmp_path / "c.yaml", "control_idle_timeout: 0\ncontrol_request_timeout: soon\n")
    with pytest.raises(LoadError) as info:
        load_config(str(path))
    assert [str(p).split(": ", 2)[1:] for p in info.value.problems] == [
        ["control_idle_timeout", "must be longer than 0, got 0"],
        ["control_request_timeout", info.value.problems[1].message],
    ]


def test_flink_rest_url_is_always_set_from_the_file_the_environment_or_the_default(tmp_path: Path) -> None:
    assert load_config(None, environ={}).flink == {"rest_url": "http://127.0.0.1:8081"}
    assert load_config(None, environ={"AIFLOWD_FLINK_REST_URL": "http://127.0.0.1:9000/"}).flink["rest_url"] == "http://127.0.0.1:9000"
    path = write(
        tmp_path / "c.yaml",
        "flink:\n  rest_url: https://flink.example:8443/\n  stop_timeout: 5m\n  conf_dir: conf\n  shared_files: false\n",
    )
    config = load_config(str(path), environ={"AIFLOWD_FLINK_REST_URL": "http://127.0.0.1:9000"})  # the file wins
    assert config.flink == {
        "rest_url": "https://flink.example:8443",
        "stop_timeout": 300.0,
        "conf_dir": str(tmp_path / "conf"),
        "shared_files": False,
    }
    assert config.job_settings()["flink"]["rest_url"] == "https://flink.example:8443"


def test_bad_flink_settings_are_located(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "flink:\n  rest_url: localhost:8081\n  resturl: http://x\n  stop_timeout: soon\n  java_home: 17\n  shared_files: 'no'\n",
    )
    with pytest.raises(LoadError) as info:
        load_config(str(path), environ={})
    assert [str(p) for p in info.value.problems][:3] == [
        f"{path}:2:3: flink.rest_url: must be an http:// or https:// URL with a host, like http://127.0.0.1:8081; got 'localhost:8081'",
        f"{path}:3:3: flink.resturl: unknown key (did you mean 'rest_url'?)",
        f"{path}:4:3: flink.stop_timeout: {info.value.problems[2].message}",
    ]
    assert str(info.value.problems[3]) == f"{path}:5:3: flink.java_home: must be a path"
    assert str(info.value.problems[4]) == f"{path}:6:3: flink.shared_files: must be true or false; got 'no'"
    with pytest.raises(LoadError) as info:
        load_config(None, environ={"AIFLOWD_FLINK_REST_URL": "127.0.0.1:8081"})
    assert str(info.value).startswith("$AIFLOWD_FLINK_REST_URL: flink.rest_url: must be an http:// or https:// URL")
