"""``ai_flow_plugins.job_plugins.bash.bash_processor``: where AIFlow code may import BashProcessor from."""

from aiflowd.plugins.bash import BashProcessor

__all__ = ["BashProcessor"]
