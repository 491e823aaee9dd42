"""``ai_flow.ai_graph.ai_node``: ``AINode``, one step of a job, as aiflowd's (its ``config`` is the node config)."""

from aiflowd.model import AINode

__all__ = ["AINode"]
