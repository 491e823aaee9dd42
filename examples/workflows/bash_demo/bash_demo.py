"""AIFlow's bash demo: job_2 runs once job_1 has finished."""

from aiflowd import BashProcessor, action_on_job_status, job_config, user_define_operation

with job_config("job_1"):
    user_define_operation(processor=BashProcessor("echo hello"))

with job_config("job_2"):
    user_define_operation(processor=BashProcessor("echo world"))

action_on_job_status("job_2", "job_1")
