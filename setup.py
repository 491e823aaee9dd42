"""Build hook: the sample config, the systemd units and the examples go into the wheel.

They are kept once, at the repository root (``etc/``, ``systemd/``, ``examples/``), where
the README's commands and the tests use them. Building copies them into
``aiflowd/data/`` inside the wheel, where ``aiflowd.data`` finds them after a
``pip install`` (``aiflowd init``, ``aiflowd systemd-units``). The workflow JSON Schema
for editors is generated there too, by the built code itself (from the loader's rules and
the built-in job types' YAML keys), so no copy is kept by hand. Everything else about the
build is in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: (source at the repository root, destination under aiflowd/data/)
DATA = [
    ("etc/aiflowd.yaml", "etc/aiflowd.yaml"),
    ("systemd/aiflowd.service", "systemd/aiflowd.service"),
    ("systemd/aiflowd.socket", "systemd/aiflowd.socket"),
    ("examples/workflows", "examples/workflows"),
]
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class BuildPyWithData(build_py):
    """build_py, then the data files copied into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout (aiflowd.data falls back to it)
        target = Path(self.build_lib) / "aiflowd" / "data"
        for source, dest in DATA:
            src, dst = ROOT / source, target / dest
            if not src.exists():
                raise SystemExit(f"setup.py: {source} is missing; the wheel needs it (an incomplete sdist?)")
            if src.is_dir():
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst, ignore=_SKIP)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
        self.write_schema(target / "workflow.schema.json")

    def write_schema(self, dest: Path) -> None:
        """The workflow schema, written by the package just built (it needs PyYAML: see build-system)."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [self.build_lib, os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "aiflowd.workflows.schema", str(dest)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"setup.py: writing the workflow schema failed:\n{result.stdout}{result.stderr}")


setup(cmdclass={"build_py": BuildPyWithData})
