"""``ai_flow.runtime``: where a job execution runs."""
