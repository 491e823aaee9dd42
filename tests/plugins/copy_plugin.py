"""A third-party job plugin with its own YAML keys: ``copy`` jobs copy a file of the
workflow folder into their execution's working folder.

In YAML: ``copy_from`` (a file of the workflow folder) and ``copy_to`` (a name in the
working folder). In a definition: ``CopyProcessor(copy_from, copy_to)``; a job of only
these processors needs no YAML entry. The controller is blocking and its generator takes
AIFlow's ``generate(sub_graph, resource_dir)``, as AIFlow's plugins are written.
"""

import os
import shutil

from aiflowd import (
    AINode,
    AISubGraph,
    Job,
    JobController,
    JobGenerationError,
    JobGenerator,
    JobHandle,
    JobPluginFactory,
    JobRuntimeEnv,
    Status,
    register_job_plugin_factory,
)


class CopyProcessor:
    def __init__(self, copy_from, copy_to="copy"):
        self.copy_from = copy_from
        self.copy_to = copy_to


class CopyJob(Job):
    def __init__(self, job_config, source, target):
        super().__init__(job_config)
        self.source = source
        self.target = target


class CopyJobGenerator(JobGenerator):
    def generate(self, sub_graph: AISubGraph, resource_dir=None) -> Job:
        [node] = sub_graph.nodes.values()
        processor = node.get_processor()
        source = os.path.join(resource_dir, processor.copy_from)
        if not os.path.isfile(source):
            raise JobGenerationError(f"no file '{processor.copy_from}' in the workflow folder", key="copy_from")
        return CopyJob(sub_graph.config, source, processor.copy_to)


class CopyJobController(JobController):
    def submit_job(self, job, job_runtime_env: JobRuntimeEnv) -> JobHandle:
        # No makedirs: the working folder exists before submit_job is called.
        shutil.copy(job.source, os.path.join(job_runtime_env.working_dir, job.target))
        self.log.info("copied %s", job.source)
        return JobHandle(job=job, job_execution=job_runtime_env.job_execution_info)

    def stop_job(self, job_handle, job_runtime_env):
        pass

    def cleanup_job(self, job_handle, job_runtime_env):
        pass

    def get_result(self, job_handle, blocking=True):
        return 0

    def get_job_status(self, job_handle):
        return Status.FINISHED


class CopyJobPluginFactory(JobPluginFactory):
    def job_type(self):
        return "copy"

    def get_job_generator(self):
        return CopyJobGenerator()

    def get_job_controller(self):
        return CopyJobController()

    def yaml_keys(self):
        return {"copy_from", "copy_to"}

    def nodes_from_yaml(self, job_name, job_yaml, workflow_dir, problem):
        if "copy_from" not in job_yaml:
            if "copy_to" in job_yaml:
                problem("copy_to", "goes with copy_from, which this job lacks")
            return None
        source = job_yaml["copy_from"]
        if not isinstance(source, str) or not source:
            problem("copy_from", "must name a file of the workflow folder")
            return []
        return [AINode(job_name, job_name, CopyProcessor(source, str(job_yaml.get("copy_to", "copy"))))]

    def processor_classes(self):
        return (CopyProcessor,)


register_job_plugin_factory(CopyJobPluginFactory())
