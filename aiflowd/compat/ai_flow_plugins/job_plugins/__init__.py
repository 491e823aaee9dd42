"""``ai_flow_plugins.job_plugins``: bash, python and flink, as aiflowd's built-in job types.

Importing one registers nothing: aiflowd's job types are registered already.
"""
