"""Property checks shared by the built-in plugins (``env``, ``cwd``, ``timeout``)."""

from __future__ import annotations

import os
from typing import Any

from aiflowd.model import parse_duration
from aiflowd.plugin_interface import JobGenerationError


def check_common_properties(properties: dict[str, Any], allowed: set[str]) -> tuple[dict[str, str], str | None]:
    """Validate a built-in job's properties; return its ``env`` (as strings) and ``cwd``.

    Properties are free-form, as in AIFlow, whose jobs read their own: a key the job type
    does not know is kept for the job, unless it is a near miss of one it knows.
    """
    check_property_keys(properties, allowed)
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


def check_property_keys(properties: dict[str, Any], known: set[str]) -> None:
    """Refuse a property key that looks like a slip of a known one (``evn``, ``tiemout``).

    Any other unknown key is the user's own and passes through to the job.
    """
    for key in properties:
        if key not in known and (near := near_miss(str(key), known)) is not None:
            raise JobGenerationError(f"unknown property '{key}' (did you mean '{near}'?)", key=f"properties.{key}")


def near_miss(word: str, known: set[str]) -> str | None:
    """The known word ``word`` is most likely a slip of, if any.

    A slip is the same word in other letter case, two neighbouring letters swapped, or,
    for known words of five letters or more, one letter added, left out or changed.
    Shorter words are not matched on one changed letter: ``cmd`` is not ``cwd``.
    """
    for candidate in sorted(known):
        if word.lower() == candidate.lower():
            return candidate
        if _swapped(word, candidate):
            return candidate
        if len(candidate) >= 5 and _one_edit_apart(word, candidate):
            return candidate
    return None


def _swapped(a: str, b: str) -> bool:
    """True when ``a`` is ``b`` with two neighbouring letters swapped."""
    if len(a) != len(b):
        return False
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return len(differ) == 2 and differ[1] == differ[0] + 1 and a[differ[0]] == b[differ[1]] and a[differ[1]] == b[differ[0]]


def _one_edit_apart(a: str, b: str) -> bool:
    """True when one letter added, left out or changed turns ``a`` into ``b``."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


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
