"""``ai_flow_plugins.job_plugins.flink.flink_processor``: where AIFlow code imports the processors from.

The Python and SQL processors are aiflowd's, under AIFlow's names: subclasses that only
mark a job as AIFlow-style, so that it runs in AIFlow's default batch mode (see
``aiflowd.runners.flink_job.initial_mode``) unless the job or ``set_flink_env`` says otherwise.
"""

from aiflowd.plugins import flink as _flink
from aiflowd.plugins.flink import FlinkJavaProcessor

__all__ = ["FlinkJavaProcessor", "FlinkPythonProcessor", "FlinkSqlProcessor"]


class FlinkPythonProcessor(_flink.FlinkPythonProcessor):
    """AIFlow's FlinkPythonProcessor: aiflowd's, in AIFlow's default batch mode."""


class FlinkSqlProcessor(_flink.FlinkSqlProcessor):
    """AIFlow's FlinkSqlProcessor: aiflowd's, in AIFlow's default batch mode."""
