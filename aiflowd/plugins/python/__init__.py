"""The ``python`` job type (see ``aiflowd.plugins.python.job``); importing it records its factory.

Job processes import this package, possibly under another interpreter: it needs only the stdlib.
"""

from aiflowd.plugin_interface import register_job_plugin_factory
from aiflowd.plugins.python.job import ExecutionContext, PythonJob, PythonJobGenerator, PythonJobPluginFactory, PythonProcessor

__all__ = ["ExecutionContext", "PythonJob", "PythonJobGenerator", "PythonJobPluginFactory", "PythonProcessor"]

# The package is these classes' public address: pickles, messages and `aiflowctl plugins` name it.
for _exported in __all__:
    _value = globals()[_exported]
    if isinstance(_value, type):
        _value.__module__ = __name__

register_job_plugin_factory(PythonJobPluginFactory())
