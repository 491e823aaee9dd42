"""``ai_flow.translator``: from a job's graph to a runnable job."""
