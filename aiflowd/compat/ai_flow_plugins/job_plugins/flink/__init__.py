"""``ai_flow_plugins.job_plugins.flink``: AIFlow's Flink names, as aiflowd's.

``FlinkPythonProcessor`` and ``FlinkSqlProcessor`` (also in ``flink_processor``), the
``ExecutionContext`` a processor gets (``execution_env``, ``table_env``,
``statement_set``), ``UDFWrapper(name, func)`` for ``udf_list``, and the environment a
job's nodes share: ``set_flink_env(FlinkBatchEnv())`` or ``FlinkStreamEnv()`` (or a
``FlinkEnv`` subclass whose ``create_env()`` returns the three), called where the job
process imports it (the processors' module). AIFlow's default, kept here, is batch.
"""

from __future__ import annotations

from typing import Any

from ai_flow_plugins.job_plugins.flink import flink_processor
from ai_flow_plugins.job_plugins.flink.flink_processor import FlinkJavaProcessor, FlinkPythonProcessor, FlinkSqlProcessor

from aiflowd.runners.flink_job import FlinkExecutionContext as ExecutionContext

__all__ = [
    "ExecutionContext",
    "FlinkBatchEnv",
    "FlinkEnv",
    "FlinkJavaProcessor",
    "FlinkPythonProcessor",
    "FlinkSqlProcessor",
    "FlinkStreamEnv",
    "UDFWrapper",
    "flink_processor",
    "get_flink_env",
    "set_flink_env",
]

NOT_YET = {"FlinkJobConfig", "INCLUDE_DATASET_VERSIONS"}


class UDFWrapper:
    """A user-defined function and the name SQL calls it by, as ``udf_list`` returns them."""

    def __init__(self, name: str, func: Any) -> None:
        self.name = name
        self.func = func

    @property
    def udf(self) -> Any:
        return self.func


class FlinkEnv:
    """The environments a Flink job's nodes share; ``create_env`` returns (execution_env, table_env, statement_set)."""

    #: The runtime mode aiflowd makes the environments in (for FlinkBatchEnv and FlinkStreamEnv).
    mode: str | None = None

    def create_env(self) -> tuple[Any, Any, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement create_env()")


class FlinkBatchEnv(FlinkEnv):
    """Batch mode: AIFlow's default."""

    mode = "batch"


class FlinkStreamEnv(FlinkEnv):
    """Streaming mode."""

    mode = "streaming"


_flink_env: FlinkEnv | None = None


def set_flink_env(env: FlinkEnv) -> None:
    """Choose the environment of the Flink jobs of this process (the job process imports the call with the processors)."""
    global _flink_env
    if not isinstance(env, FlinkEnv):
        raise TypeError(f"set_flink_env takes a FlinkEnv (FlinkBatchEnv() or FlinkStreamEnv()), got {type(env).__name__}")
    _flink_env = env


def get_flink_env() -> FlinkEnv | None:
    """The environment set_flink_env chose; None: the job's own (AIFlow-style jobs: batch)."""
    return _flink_env


def __getattr__(name: str) -> Any:
    if name in NOT_YET:
        raise NotImplementedError(f"ai_flow_plugins.job_plugins.flink.{name} is not available in aiflowd yet (see docs/aiflow.md)")
    raise AttributeError(f"module 'ai_flow_plugins.job_plugins.flink' has no attribute {name!r}")
