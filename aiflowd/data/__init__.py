"""Where the sample config, the systemd units and the examples are, installed or not.

A wheel holds them in this package (``setup.py`` copies them in at build time from
``etc/``, ``systemd/`` and ``examples/`` at the repository root, their one source); a
source checkout or an editable install reads them from the repository root. The wheel
also holds ``workflow.schema.json``, generated at build time (``aiflowd schema`` writes
the same for any install).
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parent.parent


def root() -> Path:
    """The folder holding ``etc/``, ``systemd/`` and ``examples/``."""
    if (_HERE / "etc" / "aiflowd.yaml").is_file():
        return _HERE
    if (_CHECKOUT / "etc" / "aiflowd.yaml").is_file():
        return _CHECKOUT
    raise FileNotFoundError(f"aiflowd's data files are neither in {_HERE} nor in {_CHECKOUT}: a broken install?")


def sample_config() -> Path:
    """The documented config: every key with its default."""
    return root() / "etc" / "aiflowd.yaml"


def unit_template(name: str) -> Path:
    """A systemd unit as shipped (``aiflowd.service`` or ``aiflowd.socket``)."""
    return root() / "systemd" / name


def examples() -> Path:
    """The example workflows folder."""
    return root() / "examples" / "workflows"


def workflow_schema() -> Path | None:
    """The workflow JSON Schema the wheel ships (built-in job types); None in a source checkout."""
    path = _HERE / "workflow.schema.json"
    return path if path.is_file() else None
