"""Property checks shared by the built-in plugins (``env``, ``cwd``, ``timeout``)."""

from __future__ import annotations

import os
from typing import Any

from aiflowd.model import parse_duration
from aiflowd.plugin_interface import JobGenerationError
from aiflowd.workflows.errors import suggest


def check_common_properties(properties: dict[str, Any], allowed: set[str]) -> tuple[dict[str, str], str | None]:
    """Validate a built-in job's properties; return its ``env`` (as strings) and ``cwd``."""
    for key in properties:
        if key not in allowed:
            raise JobGenerationError(f"unknown property '{key}' ({suggest(key, allowed)})", key=f"properties.{key}")
    env = environment_property(properties.get("env"))
    cwd = properties.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise JobGenerationError("cwd must be a path", key="properties.cwd")
    if cwd is not None and not os.path.isabs(cwd) and ".." in cwd.split("/"):
        raise JobGenerationError("a relative cwd may not leave the execution's working folder", key="properties.cwd")
    if "timeout" in properties:
        try:
            parse_duration(properties["timeout"])
        except ValueError as err:
            raise JobGenerationError(str(err), key="properties.timeout") from err
    return env, cwd


def environment_property(env: Any) -> dict[str, str]:
    """``env`` as strings: numbers as written, booleans as ``true``/``false``, null as empty."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise JobGenerationError("env must be a mapping of NAME: value", key="properties.env")
    result: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise JobGenerationError(f"'{name}' is not a valid environment variable name", key=f"properties.env.{name}")
        if isinstance(value, bool):
            result[name] = "true" if value else "false"
        elif value is None:
            result[name] = ""
        elif isinstance(value, (str, int, float)):
            result[name] = str(value)
        else:
            raise JobGenerationError("must be a string, number or boolean", key=f"properties.env.{name}")
    return result
