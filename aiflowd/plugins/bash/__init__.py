"""The ``bash`` job type (see ``aiflowd.plugins.bash.job``); importing it records its factory."""

from aiflowd.plugin_interface import register_job_plugin_factory
from aiflowd.plugins.bash.job import YAML_KEYS, BashJob, BashJobGenerator, BashJobPluginFactory, BashProcessor

__all__ = ["YAML_KEYS", "BashJob", "BashJobGenerator", "BashJobPluginFactory", "BashProcessor"]

# The package is these classes' public address: pickles, messages and `aiflowctl plugins` name it.
for _exported in __all__:
    _value = globals()[_exported]
    if isinstance(_value, type):
        _value.__module__ = __name__

register_job_plugin_factory(BashJobPluginFactory())
