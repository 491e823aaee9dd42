"""``ai_flow_plugins`` for AIFlow 0.3 code: its job plugins' public names, served by aiflowd's built-ins."""
