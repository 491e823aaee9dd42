"""The ``flink`` job type (see ``aiflowd.plugins.flink.job``); importing it records its factory.

Its controller (``aiflowd.plugins.flink.controller``) loads only when a registry asks the
factory for it: workflow definitions and PyFlink job processes import just the processors.
"""

from aiflowd.plugin_interface import register_job_plugin_factory
from aiflowd.plugins.flink.job import (
    PROPERTIES,
    YAML_KEYS,
    FlinkJavaJob,
    FlinkJavaProcessor,
    FlinkJob,
    FlinkJobGenerator,
    FlinkJobPluginFactory,
    FlinkPythonJob,
    FlinkPythonProcessor,
    FlinkSqlProcessor,
    SqlStatementsProcessor,
    flink_options,
    split_sql,
)

__all__ = [
    "PROPERTIES",
    "YAML_KEYS",
    "FlinkJavaJob",
    "FlinkJavaProcessor",
    "FlinkJob",
    "FlinkJobGenerator",
    "FlinkJobPluginFactory",
    "FlinkPythonJob",
    "FlinkPythonProcessor",
    "FlinkSqlProcessor",
    "SqlStatementsProcessor",
    "flink_options",
    "split_sql",
]

# The package is these classes' public address: pickles, messages and `aiflowctl plugins` name it.
for _exported in __all__:
    _value = globals()[_exported]
    if isinstance(_value, type):
        _value.__module__ = __name__

register_job_plugin_factory(FlinkJobPluginFactory())
