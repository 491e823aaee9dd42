"""``ai_flow.api.ai_flow_context``: ``init_ai_flow_context()``, which AIFlow definitions call first.

AIFlow registers the project with its server here. aiflowd has no server to tell: the
daemon already knows the workflow it is loading. The call only remembers which file
made it, so that ``current_workflow_config()`` can find the YAML beside it (AIFlow's
``NAME/NAME.py`` next to ``NAME/NAME.yaml``).
"""

from __future__ import annotations

import os
import sys

_entry_file: str | None = None


def init_ai_flow_context(workflow_entry_file: str | None = None) -> None:
    """Note the definition file (the caller's, unless given); nothing else is needed here."""
    global _entry_file
    if workflow_entry_file is None:
        workflow_entry_file = sys._getframe(1).f_code.co_filename
    _entry_file = os.path.abspath(workflow_entry_file)


def workflow_entry_file() -> str | None:
    """The definition file ``init_ai_flow_context`` was called from, if it was."""
    return _entry_file
