"""``ai_flow.client``: the client a job or notebook uses to reach aiflowd (AIFlow's server)."""
