"""``ai_flow.translator.translator``: ``JobGenerator``, as aiflowd's.

aiflowd calls ``generate(sub_graph, resource_dir)`` on a generator that takes AIFlow's
two arguments, and passes ``job_config`` to one that asks for it.
"""

from aiflowd.plugin_interface import JobGenerator

__all__ = ["JobGenerator"]
