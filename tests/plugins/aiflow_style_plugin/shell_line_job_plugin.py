"""The four classes AIFlow's job-plugin guide asks for, written against AIFlow's names:
a Job, a JobGenerator, a JobController with blocking methods, and a JobPluginFactory.
The controller starts each job as its own session with ``subprocess.Popen`` (as AIFlow's
bash plugin does) and keeps the process only in its handle: it cannot reattach."""

import os
import signal
from subprocess import Popen
from typing import Text

from ai_flow.ai_graph.ai_graph import AISubGraph
from ai_flow.plugin_interface.job_plugin_interface import JobController, JobHandle, JobPluginFactory
from ai_flow.plugin_interface.scheduler_interface import JobExecutionInfo
from ai_flow.runtime.job_runtime_env import JobRuntimeEnv
from ai_flow.translator.translator import JobGenerator
from ai_flow.workflow.job import Job
from ai_flow.workflow.job_config import JobConfig
from ai_flow.workflow.status import Status

from aiflow_style_plugin.shell_line_processor import ShellLineProcessor


class ShellLineJob(Job):
    def __init__(self, job_config: JobConfig, command: Text) -> None:
        super().__init__(job_config)
        self.command = command


class ShellLineJobHandle(JobHandle):
    def __init__(self, job: Job, job_execution: JobExecutionInfo) -> None:
        super().__init__(job=job, job_execution=job_execution)
        self.sub_process = None
        self.stopped = False


class ShellLineJobGenerator(JobGenerator):
    def generate(self, sub_graph: AISubGraph, resource_dir: Text = None) -> Job:
        commands = []
        for node_name, ai_node in sub_graph.nodes.items():
            processor = ai_node.get_processor()
            if not isinstance(processor, ShellLineProcessor):
                raise Exception(
                    "node {} of job {} needs a ShellLineProcessor, not {}".format(
                        node_name, sub_graph.config.job_name, type(processor).__name__
                    )
                )
            commands.append(processor.command)
        return ShellLineJob(job_config=sub_graph.config, command=" && ".join(commands))


class ShellLineJobController(JobController):
    def submit_job(self, job: Job, job_runtime_env: JobRuntimeEnv) -> JobHandle:
        handle = ShellLineJobHandle(job=job, job_execution=job_runtime_env.job_execution_info)
        env = os.environ.copy()
        env["WORKFLOW_EXECUTION_ID"] = job_runtime_env.job_execution_info.workflow_execution.workflow_execution_id
        out = open(os.path.join(job_runtime_env.working_dir, "output.txt"), "wb")
        self.log.info("Running command: %s", job.command)
        handle.sub_process = Popen(
            ["bash", "-c", job.command], stdout=out, stderr=out, cwd=job_runtime_env.working_dir, env=env, start_new_session=True
        )
        out.close()
        return handle

    def stop_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv):
        process = job_handle.sub_process
        if process is not None and process.poll() is None:
            job_handle.stopped = True
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()

    def cleanup_job(self, job_handle: JobHandle, job_runtime_env: JobRuntimeEnv):
        pass

    def get_result(self, job_handle: JobHandle, blocking: bool = True) -> object:
        process = job_handle.sub_process
        if blocking:
            return process.wait()
        return process.poll()

    def get_job_status(self, job_handle: JobHandle) -> Status:
        process = job_handle.sub_process
        if process.poll() is None:
            return Status.RUNNING
        if job_handle.stopped:
            return Status.KILLED
        return Status.FINISHED if process.returncode == 0 else Status.FAILED


class ShellLineJobPluginFactory(JobPluginFactory):
    def __init__(self) -> None:
        super().__init__()
        self._job_generator = ShellLineJobGenerator()
        self._job_controller = ShellLineJobController()

    def job_type(self) -> Text:
        return "shell_line"

    def get_job_generator(self) -> JobGenerator:
        return self._job_generator

    def get_job_controller(self) -> JobController:
        return self._job_controller
