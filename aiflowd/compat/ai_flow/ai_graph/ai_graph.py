"""``ai_flow.ai_graph.ai_graph``: ``AISubGraph``, all nodes of one job, as aiflowd's.

``current_graph()`` is not offered: aiflowd builds the graph from the definition itself.
"""

from aiflowd.model import AISubGraph

__all__ = ["AISubGraph"]
