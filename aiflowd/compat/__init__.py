"""AIFlow 0.3's import names, ``ai_flow`` and ``ai_flow_plugins``, mapped onto aiflowd.

AIFlow workflows start with ``import ai_flow as af`` and import their processors from
``ai_flow_plugins.job_plugins``. This folder holds small packages of those names that
forward to aiflowd's own, so that an AIFlow workflow folder runs without an edit.
``enable()`` makes them importable: the definition compiler and the python job runner
call it, and anyone else (a notebook, a test, a job's own script) may call it too.

The folder is appended to ``sys.path``, never put first: where a real AIFlow is
installed, ``import ai_flow`` keeps finding it. docs/aiflow.md lists every name with
its status.
"""

from __future__ import annotations

import os
import sys

#: The folder holding the ``ai_flow`` and ``ai_flow_plugins`` packages.
COMPAT_PATH = os.path.dirname(os.path.abspath(__file__))


def enable() -> None:
    """Make ``import ai_flow`` and ``import ai_flow_plugins`` work, after everything else on the path."""
    if COMPAT_PATH not in sys.path:
        sys.path.append(COMPAT_PATH)
