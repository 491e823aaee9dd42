"""``ai_flow.ai_graph``: a job's nodes and the data edges between them."""
