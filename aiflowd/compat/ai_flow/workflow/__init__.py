"""``ai_flow.workflow``: statuses, rules and workflow/job configs, as AIFlow names them."""
