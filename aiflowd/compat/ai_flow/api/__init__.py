"""``ai_flow.api``: the functions a workflow definition calls."""
