"""Loading workflows: strict YAML, the Python DSL and its compiler, validation, discovery."""
