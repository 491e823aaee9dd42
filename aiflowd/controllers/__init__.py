"""How jobs run: local process groups, and the async supervision of one job execution."""
