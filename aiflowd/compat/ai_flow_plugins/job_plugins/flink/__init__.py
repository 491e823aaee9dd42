"""``ai_flow_plugins.job_plugins.flink``: AIFlow's three Flink processors, as aiflowd's.

Only the processor names map so far. AIFlow's Flink environment helpers
(``set_flink_env``, ``FlinkBatchEnv``, ``FlinkStreamEnv``, ``UDFWrapper``, the execution
context's ``execution_env``) are not offered yet and say so when used; see docs/aiflow.md.
"""

from __future__ import annotations

from typing import Any

from aiflowd.plugins.flink import FlinkJavaProcessor, FlinkPythonProcessor, FlinkSqlProcessor

__all__ = ["FlinkJavaProcessor", "FlinkPythonProcessor", "FlinkSqlProcessor"]

NOT_YET = {
    "ExecutionContext",
    "FlinkEnv",
    "FlinkBatchEnv",
    "FlinkStreamEnv",
    "FlinkJobConfig",
    "INCLUDE_DATASET_VERSIONS",
    "UDFWrapper",
    "set_flink_env",
}


def __getattr__(name: str) -> Any:
    if name in NOT_YET:
        raise NotImplementedError(f"ai_flow_plugins.job_plugins.flink.{name} is not available in aiflowd yet (see docs/aiflow.md)")
    raise AttributeError(f"module 'ai_flow_plugins.job_plugins.flink' has no attribute {name!r}")
