"""Command-line entry points: ``aiflowd`` (the daemon and run-once) and ``aiflowctl`` (the client)."""
