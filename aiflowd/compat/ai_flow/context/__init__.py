"""``ai_flow.context``: what a definition or a job knows of the workflow it belongs to."""
