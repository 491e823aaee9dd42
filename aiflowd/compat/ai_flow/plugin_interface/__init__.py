"""``ai_flow.plugin_interface``: ``register_job_plugin_factory``, as a job plugin's ``__init__`` calls it."""

from aiflowd.plugin_interface import register_job_plugin_factory

__all__ = ["register_job_plugin_factory"]
