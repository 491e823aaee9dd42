"""A job plugin package laid out as AIFlow 0.3's job-plugin guide lays one out: its
``__init__`` exposes the public names and registers the factory with AIFlow's import
path. Nothing here knows of aiflowd."""

from ai_flow.plugin_interface import register_job_plugin_factory

from aiflow_style_plugin.shell_line_job_plugin import ShellLineJobPluginFactory

# Expose the public API of the plugin.
from aiflow_style_plugin.shell_line_processor import ShellLineProcessor

__all__ = ["ShellLineProcessor"]

# Register the plugin.
register_job_plugin_factory(ShellLineJobPluginFactory())
