"""Reproducible performance measurements; each prints its figure next to its reference."""
