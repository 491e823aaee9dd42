"""``ai_flow.ai_graph.data_edge``: ``DataEdge``, an output of one node feeding another, as aiflowd's."""

from aiflowd.model import DataEdge

__all__ = ["DataEdge"]
