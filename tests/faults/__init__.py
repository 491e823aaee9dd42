"""Fault tests: each drives a real daemon into a failure it must contain."""
