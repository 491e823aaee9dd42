"""The wheel and the sdist as a user gets them: their contents, and the wheel installed.

One build per session (``python -m build --no-isolation`` in a copy of the source tree,
so the checkout gets no build/ or egg-info; no network: the build backend is in the test
extra). The installed wheel goes into a fresh venv with ``pip install --no-deps
--no-index``; its dependencies come from the environment running the tests through a
``.pth`` file (``--system-site-packages`` would reach the base interpreter's packages, not
this virtualenv's). That keeps the test to seconds, with no download and no Flink, while
the code that runs is the wheel's, not the checkout's (checked).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import aiflowd

from .conftest import REPO

#: What the wheel must hold besides the code, under aiflowd/.
WHEEL_DATA = [
    "py.typed",
    "data/etc/aiflowd.yaml",
    "data/systemd/aiflowd.service",
    "data/systemd/aiflowd.socket",
    "data/workflow.schema.json",  # generated at build time (setup.py), not kept in the tree
]
#: Source folders the sdist holds whole: the tests and everything they read.
SDIST_TREES = ["aiflowd", "tests", "examples", "etc", "systemd", "scripts", "docs"]
_SKIP = shutil.ignore_patterns(".git", ".venv", ".aiflowd", ".flink", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".*_cache")


@dataclass
class Built:
    wheel: Path
    sdist: Path
    log: str


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("build")
    source = tmp / "src"
    shutil.copytree(REPO, source, ignore=_SKIP)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp / "dist").glob("*.whl")
    [sdist] = (tmp / "dist").glob("*.tar.gz")
    return Built(wheel, sdist, result.stdout + result.stderr)


def test_build_is_quiet_about_the_license(built: Built) -> None:
    # The license table form printed deprecation warnings on every build and install.
    complaints = [line for line in built.log.lower().splitlines() if "license" in line and ("warn" in line or "deprecat" in line)]
    assert complaints == []
    assert "SetuptoolsDeprecationWarning" not in built.log


def test_wheel_holds_the_code_data_license_and_version(built: Built) -> None:
    assert built.wheel.name == f"aiflowd-{aiflowd.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(built.wheel).namelist())
    for name in WHEEL_DATA:
        assert f"aiflowd/{name}" in names
    examples = _files(REPO / "examples" / "workflows")
    assert examples, "the examples folder is empty?"
    for name in examples:
        assert f"aiflowd/data/examples/workflows/{name}" in names
    packaged = {n for n in names if n.startswith("aiflowd/") and n.endswith(".py") and not n.startswith("aiflowd/data/examples/")}
    assert packaged == {f"aiflowd/{p}" for p in _files(REPO / "aiflowd") if p.endswith(".py")}
    dist_info = f"aiflowd-{aiflowd.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(built.wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert f"Version: {aiflowd.__version__}\n" in metadata
    assert 'Requires-Dist: apache-flink<3,>=2.0; extra == "flink"' in metadata


def test_sdist_holds_the_tests_and_what_they_need(built: Built) -> None:
    top = built.sdist.name.removesuffix(".tar.gz")
    with tarfile.open(built.sdist) as tar:
        names = {m.name.removeprefix(f"{top}/") for m in tar.getmembers() if m.isfile()}
    for tree in SDIST_TREES:
        for name in _files(REPO / tree):
            assert f"{tree}/{name}" in names, f"the sdist lacks {tree}/{name}"
    for name in ("LICENSE", "README.md", "constraints.txt", "pyproject.toml", "setup.py"):
        assert name in names
    assert not any(n.startswith("benchmarks/") for n in names)


def test_sdist_tests_run_from_it(built: Built, tmp_path: Path) -> None:
    with tarfile.open(built.sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    [unpacked] = tmp_path.iterdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_config.py",
            "tests/test_cli.py::test_validate_the_examples",
        ],
        cwd=unpacked,
        env={**os.environ, "PYTHONPATH": str(unpacked)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel (and only it); the dependencies are this environment's."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    purelib = Path(
        subprocess.check_output(
            [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (purelib / "_aiflowd_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            str(built.wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_installed_wheel_runs_from_itself(venv: Path, tmp_path: Path) -> None:
    code = "import aiflowd, aiflowd.data; print(aiflowd.__file__); print(aiflowd.data.root())"
    where = _run(venv, "python", "-c", code, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    module, data = where.stdout.splitlines()
    assert module.startswith(str(venv)) and data.startswith(str(venv)), where.stdout
    for tool in ("aiflowd", "aiflowctl"):
        result = _run(venv, tool, "--version", cwd=tmp_path)
        assert (result.returncode, result.stdout) == (0, f"{tool} {aiflowd.__version__}\n")


def test_installed_wheel_inits_and_runs_the_hello_workflow(venv: Path, tmp_path: Path) -> None:
    result = _run(venv, "aiflowd", "init", "demo", "--examples", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    demo = tmp_path / "demo"
    assert {"hello.yaml", "bash_demo", "python_demo"} <= {p.name for p in (demo / "workflows").iterdir()}
    assert str(venv) in (demo / "aiflowd.yaml").read_text()  # it names the documented sample, in the install
    result = _run(venv, "aiflowd", "run-once", "workflows/hello.yaml", cwd=demo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "    Hello from aiflowd\n" in result.stdout
    result = _run(venv, "aiflowd", "run-once", "workflows/python_demo", cwd=demo)
    assert result.returncode == 0 and "    Hello World!\n" in result.stdout, result.stdout + result.stderr


def test_installed_units_name_the_installed_daemon(venv: Path, tmp_path: Path) -> None:
    result = _run(venv, "aiflowd", "systemd-units", "--output", str(tmp_path / "units"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    service = (tmp_path / "units" / "aiflowd.service").read_text()
    assert f"ExecStart={venv}/bin/aiflowd --config /etc/aiflowd/aiflowd.yaml\n" in service


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_requirement_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for text in [*project["dependencies"], *project["optional-dependencies"]["flink"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[name]), f"constraints.txt pins {name}=={pins[name]}, outside {requirement}"


def test_version_is_written_once() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "aiflowd.__version__"}


def test_readme_names_this_version_s_wheel() -> None:
    """The README's install commands name the wheel file, so they follow the version."""
    named = set(re.findall(r"aiflowd-([0-9][^-]*)-py3-none-any\.whl", (REPO / "README.md").read_text()))
    assert named == {aiflowd.__version__}
