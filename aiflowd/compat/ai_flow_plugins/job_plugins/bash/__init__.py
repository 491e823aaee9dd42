"""``ai_flow_plugins.job_plugins.bash``: AIFlow's BashProcessor is aiflowd's (same arguments)."""

from aiflowd.plugins.bash import BashProcessor

__all__ = ["BashProcessor"]
