"""The daemon's read-only HTTP side: status pages, a JSON API and Prometheus metrics.

Off unless the config has an ``http`` section. It needs the ``http`` extra (hypercorn and
prometheus_client): ``pip install 'aiflowd[http]'``. ``require()`` says so in one line when
they are missing, before the daemon starts anything.
"""

from __future__ import annotations

import importlib.util

#: What to install for ``http:``; the one line a user sees when it is missing.
MISSING = "the http section needs the http extra (hypercorn, prometheus_client): pip install 'aiflowd[http]'"


def missing() -> str | None:
    """Why the HTTP side cannot run here (its libraries are not installed), or None."""
    absent = [name for name in ("hypercorn", "prometheus_client") if importlib.util.find_spec(name) is None]
    return f"{MISSING}; missing: {', '.join(absent)}" if absent else None
