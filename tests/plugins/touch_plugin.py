"""A third-party job plugin written the way the AIFlow docs show: blocking controller
methods, AIFlow's ``generate(sub_graph, resource_dir)`` signature, and registration at
import time. Its ``touch`` jobs create the file their processor names."""

import os
from typing import Text

from aiflowd import (
    AISubGraph,
    Job,
    JobController,
    JobGenerator,
    JobHandle,
    JobPluginFactory,
    JobRuntimeEnv,
    Status,
    register_job_plugin_factory,
)


class TouchProcessor(object):
    def __init__(self, file_name: Text) -> None:
        self.file_name = file_name


class TouchJob(Job):
    def __init__(self, job_config, file_name) -> None:
        super().__init__(job_config)
        self.file_name = file_name


class TouchJobGenerator(JobGenerator):
    def generate(self, sub_graph: AISubGraph, resource_dir: Text = None) -> Job:
        processor = list(sub_graph.nodes.values())[0].processor
        return TouchJob(job_config=sub_graph.config, file_name=processor.file_name)


class TouchJobHandle(JobHandle):
    pass


class TouchJobController(JobController):
    def submit_job(self, job: Job, job_runtime_env: JobRuntimeEnv) -> JobHandle:
        path = os.path.join(job_runtime_env.workflow_dir, job.file_name)
        with open(path, "w") as fh:
            fh.write(job_runtime_env.job_execution_info.job_execution_id)
        return TouchJobHandle(job=job, job_execution=job_runtime_env.job_execution_info)

    def stop_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv):
        pass

    def cleanup_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv):
        pass

    def get_result(self, job_handle: JobHandle, blocking: bool = True) -> object:
        return 0

    def get_job_status(self, job_handle: JobHandle) -> Status:
        return Status.FINISHED


class TouchJobPluginFactory(JobPluginFactory):
    def job_type(self) -> Text:
        return "touch"

    def get_job_generator(self) -> JobGenerator:
        return TouchJobGenerator()

    def get_job_controller(self) -> JobController:
        return TouchJobController()


register_job_plugin_factory(TouchJobPluginFactory())
