"""The built-in job plugins: one module per job type."""
