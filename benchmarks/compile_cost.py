"""Cost of loading a workflow with a Python definition, next to a bare Python start.

The definition runs in a subprocess (never in the daemon), so its floor is one
interpreter start; the reference is ``python -c pass`` and ``python -c "import aiflowd"``
timed in the same run. A YAML-only workflow, loaded without any subprocess, is shown too.

Usage: python -m benchmarks.compile_cost [--rounds 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from aiflowd.plugin_interface import PluginRegistry
from aiflowd.workflows.loader import LoaderSettings, WorkflowLoader
from benchmarks.measure import median_ms

DEFINITION = textwrap.dedent(
    """
    from aiflowd import PythonProcessor, action_on_job_status, job_config, user_define_operation

    class Step(PythonProcessor):
        def __init__(self, n):
            self.n = n
        def process(self, ctx, inputs):
            return [self.n]

    for i in range(5):
        with job_config(f"job_{i}"):
            out = user_define_operation(processor=Step(i))
            user_define_operation(processor=Step(i + 1), input=out)
    for i in range(1, 5):
        action_on_job_status(f"job_{i}", f"job_{i - 1}")
    """
)


def main(rounds: int) -> None:
    registry = PluginRegistry()
    registry.load_builtin()
    loader = WorkflowLoader(registry, LoaderSettings(warm_start=False))  # cold: benchmarks.warm_start compares both
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "flow"
        folder.mkdir()
        (folder / "flow.yaml").write_text("".join(f"job_{i}:\n  job_type: python\n" for i in range(5)))
        (folder / "flow.py").write_text(DEFINITION)
        yaml_only = Path(tmp) / "plain.yaml"
        yaml_only.write_text("".join(f"job_{i}:\n  job_type: bash\n  bash_command: echo {i}\n" for i in range(5)))
        bare = median_ms(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), rounds)
        bare_import = median_ms(
            lambda: subprocess.run([sys.executable, "-c", "import aiflowd.workflows.dsl, aiflowd.plugins.python"], check=True), rounds
        )
        python = median_ms(lambda: loader.load(str(folder)), rounds)
        plain = median_ms(lambda: loader.load(str(yaml_only)), rounds)
    print(f"median of {rounds} loads")
    print(f"  python -c pass (reference)                      : {bare:6.1f} ms")
    print(f"  python importing aiflowd's DSL (reference)      : {bare_import:6.1f} ms")
    print(f"  load: 5 python jobs, 10 nodes, 4 rules, compiled : {python:6.1f} ms  ({python - bare_import:+.1f} ms over the import)")
    print(f"  load: 5 bash jobs, YAML only (no subprocess)     : {plain:6.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    main(parser.parse_args().rounds)
