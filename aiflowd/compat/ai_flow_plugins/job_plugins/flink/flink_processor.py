"""``ai_flow_plugins.job_plugins.flink.flink_processor``: where AIFlow code imports the processors from."""

from aiflowd.plugins.flink import FlinkJavaProcessor, FlinkPythonProcessor, FlinkSqlProcessor

__all__ = ["FlinkJavaProcessor", "FlinkPythonProcessor", "FlinkSqlProcessor"]
