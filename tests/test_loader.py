"""The workflow loader: valid forms load; every bad input is one located line with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiflowd.model import EventCondition, JobAction, JobStatusCondition, ProcessorRef
from aiflowd.plugins.bash import BashJob, BashProcessor
from aiflowd.plugins.python import PythonJob
from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.loader import LoaderSettings, WorkflowLoader, discover, find_source, workflow_version

from .conftest import write


@pytest.fixture(params=[True, False], ids=["warm", "cold"])
def warm(request: pytest.FixtureRequest) -> bool:
    """Each compile test runs in a fork of the fork server and in a new interpreter: same results."""
    return bool(request.param)


@pytest.fixture
def loader(registry, warm: bool) -> WorkflowLoader:  # type: ignore[no-untyped-def]
    return WorkflowLoader(registry, LoaderSettings(compile_timeout=10, warm_start=warm))


def problems(loader: WorkflowLoader, path: Path) -> list[str]:
    with pytest.raises(LoadError) as info:
        loader.load(str(path))
    return [str(p) for p in info.value.problems]


def one_problem(loader: WorkflowLoader, path: Path) -> str:
    found = problems(loader, path)
    assert len(found) == 1, found
    return found[0]


def test_yaml_only_bash_workflow_loads(loader: WorkflowLoader, tmp_path: Path) -> None:
    path = write(
        tmp_path / "etl.yaml",
        """
        job_1:
          job_type: bash
          bash_command: echo "Hello World!"
          properties: {env: {GREETING: hi, COUNT: 3, DEBUG: true}}
        job_2:
          job_type: bash
          bash_command: echo two
          retries: 2
          retry_delay: 5s
          timeout: 1m
          action_on_job_status:
            - {upstream_job: job_1, upstream_job_status: FINISHED, action: START}
          action_on_event:
            - {event_key: model_updated, event_value: "*", action: RESTART}
        """,
    )
    loaded = loader.load(str(path))
    workflow = loaded.workflow
    assert workflow.name == "etl"
    assert list(workflow.jobs) == ["job_1", "job_2"]
    job_1 = loaded.jobs["job_1"]
    assert isinstance(job_1, BashJob)
    assert job_1.bash_command == 'echo "Hello World!"'
    assert job_1.env == {"GREETING": "hi", "COUNT": "3", "DEBUG": "true"}
    config = workflow.jobs["job_2"].config
    assert (config.retries, config.retry_delay, config.timeout) == (2, 5.0, 60.0)
    assert workflow.rules[0].condition == JobStatusCondition("job_1", "FINISHED")
    assert workflow.rules[1].condition == EventCondition("model_updated", "*", "*", "*", "default")
    assert workflow.rules[1].action == JobAction.RESTART


def test_aiflow_shape_with_python_definition(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    write(folder / "demo.yaml", "job_1:\n  job_type: python\n")
    write(
        folder / "demo.py",
        """
        from aiflowd import PythonProcessor, job_config, user_define_operation

        class Hello(PythonProcessor):
            def __init__(self, who):
                self.who = who
            def process(self, execution_context, input_list):
                return []

        with job_config("job_1"):
            user_define_operation(processor=Hello("world"))
        """,
    )
    loaded = loader.load(str(folder))
    job = loaded.jobs["job_1"]
    assert isinstance(job, PythonJob)
    processor = loaded.workflow.jobs["job_1"].nodes["node_0"].processor
    assert isinstance(processor, ProcessorRef)
    assert processor.class_name == "demo.Hello"


def test_python_definition_jobs_without_yaml_entry_infer_their_type(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = tmp_path / "flow"
    write(folder / "flow.yaml", "properties: {owner: data-team}\n")
    write(
        folder / "flow.py",
        """
        from aiflowd import BashProcessor, job_config, user_define_operation
        with job_config("say"):
            user_define_operation(processor=BashProcessor("echo hi"))
        """,
    )
    loaded = loader.load(str(folder))
    assert loaded.workflow.jobs["say"].config.job_type == "bash"
    # Built-in processors are plain data: the daemon holds the real object, not a reference.
    assert isinstance(loaded.workflow.jobs["say"].nodes["node_0"].processor, BashProcessor)


def test_version_changes_with_any_file(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    write(folder / "wf.yaml", "a: {job_type: bash, bash_command: 'true'}\n")
    write(folder / "data.sql", "select 1;\n")
    before = workflow_version(find_source(str(folder)))
    write(folder / "data.sql", "select 2;\n")
    assert workflow_version(find_source(str(folder))) != before


def test_discover_skips_hidden_and_temporary_files(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "{}\n")
    write(tmp_path / ".a.yaml.swp", "")
    write(tmp_path / "b.yaml~", "")
    write(tmp_path / "wf" / "wf.yaml", "{}\n")
    write(tmp_path / "notes" / "readme.txt", "")
    assert [Path(p).name for p in discover(str(tmp_path))] == ["a.yaml", "wf"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("job_1:\n  job_tpye: bash\n", "etl.yaml:2:3: job_1.job_tpye: unknown key (did you mean 'job_type'?)"),
        ("job_1:\n  job_type: bsh\n  bash_command: x\n", "etl.yaml:2:3: job_1.job_type: unknown job type 'bsh' (did you mean 'bash'?)"),
        ("job_1:\n  job_type: spark\n", "etl.yaml:2:3: job_1.job_type: unknown job type 'spark' (known: bash, flink, python)"),
        (
            "job_1:\n  job_type: bash\n  bash_command: x\n  retries: many\n",
            "etl.yaml:4:3: job_1.retries: must be a whole number >= 0, got 'many'",
        ),
        ("job_1:\n  job_type: bash\n  bash_command: x\n  properties: [1]\n", "etl.yaml:4:3: job_1.properties: must be a mapping"),
        (
            "job_1:\n  job_type: bash\n  bash_command: x\n  properties:\n    env: {A: [1]}\n",
            "etl.yaml:5:11: job_1.properties.env.A: must be a string, number or boolean",
        ),
        (
            "job_1:\n  job_type: bash\n  bash_command: x\n  properties: {evn: {}}\n",
            "etl.yaml:4:16: job_1.properties.evn: unknown property 'evn' (did you mean 'env'?)",
        ),
        (
            "job_1:\n  job_type: bash\n  bash_command: x\n  periodic_config: {cron: '61 * * * *'}\n",
            "etl.yaml:4:21: job_1.periodic_config.cron: invalid cron expression '61 * * * *'",
        ),
        (
            "periodic_config: {cron: '0 0 30 2 *'}\njob_1:\n  job_type: bash\n  bash_command: x\n",
            "etl.yaml:1:19: periodic_config.cron: cron expression '0 0 30 2 *' never fires (no such day, like 30 February)",
        ),
        (
            "periodic_config:\n  interval: every day\n",
            "etl.yaml:2:3: periodic_config.interval: expected a duration like '90s', '5m', '1h30m' or '0,0,5,0', got 'every day'",
        ),
        (
            "periodic_config:\n  cron: '* * * * *'\n  interval: 5m\n",
            "etl.yaml:1:1: periodic_config: give exactly one of 'cron' and 'interval'",
        ),
        (
            "periodic_config:\n  interval: '1,2,3'\n",
            "etl.yaml:2:3: periodic_config.interval: AIFlow's interval form is 'days,hours,minutes,seconds' (like '0,0,5,0'), got '1,2,3'",
        ),
        (
            "job_1:\n  job_type: bash\n  bash_command: x\n  action_on_job_status:\n    - {upstream_job: job_9}\n",
            "etl.yaml:5:8: job_1.action_on_job_status[0].upstream_job: upstream job 'job_9' is not a job of this workflow (did you mean 'job_1'?)",
        ),
        (
            "job_1:\n  job_type: bash\n  bash_command: x\n  action_on_event:\n    - {event_key: k, action: JUMP}\n",
            "etl.yaml:5:22: job_1.action_on_event[0].action: unknown action 'JUMP' (known: START, RESTART, STOP, NONE)",
        ),
        (
            "../evil:\n  job_type: bash\n  bash_command: x\n",
            "etl.yaml:1:1: ../evil: not a valid job name: use letters, digits, '_', '-' and '.', not starting with '.' or '-'",
        ),
        (
            "job_1:\n  job_type: bash\n  bash_command: x\n  processor: steps:Thing\n",
            "etl.yaml:4:3: job_1.processor: give one of bash_command and processor, not both",
        ),
        ("job_1:\n  job_type: bash\n  bash_command: ''\n", "etl.yaml:3:3: job_1.bash_command: bash_command must be a non-empty string"),
        ("periodic_confg:\n  interval: 5m\n", "etl.yaml:1:1: periodic_confg: unknown workflow key (did you mean 'periodic_config'?)"),
        ("on_change: sometimes\n", "etl.yaml:1:1: on_change: must be one of restart, wait, ignore; got 'sometimes'"),
        ("on_overlap: sometimes\n", "etl.yaml:1:1: on_overlap: must be one of skip, queue, allow; got 'sometimes'"),
        ("on_overlap: skp\n", "etl.yaml:1:1: on_overlap: must be one of skip, queue, allow; got 'skp' (did you mean 'skip'?)"),
        ("max_active_executions: 0\n", "etl.yaml:1:1: max_active_executions: must be a whole number >= 1, got 0"),
        ("max_active_executions: two\n", "etl.yaml:1:1: max_active_executions: must be a whole number >= 1, got 'two'"),
        (
            "job_1:\n  job_type: bash\n  bash_command: x\n  retry_backoff: exponentail\n",
            "etl.yaml:4:3: job_1.retry_backoff: must be one of fixed, exponential; got 'exponentail' (did you mean 'exponential'?)",
        ),
        (
            "job_1:\n  job_type: bash\n  bash_command: x\n  retry_max_delay: soon\n",
            "etl.yaml:4:3: job_1.retry_max_delay: expected a duration like '90s', '5m', '1h30m' or '0,0,5,0', got 'soon'",
        ),
        ("job_1: 3\n", "etl.yaml:1:1: job_1: a job must be a mapping with a job_type"),
        ("job_1:\n  job_type: bash\n  job_type: python\n", "etl.yaml:3:3: job_1.job_type: duplicate key (first defined on line 2)"),
        ("job_1:\n  job_type: bash\n  bash_command: 'x\n", "etl.yaml:4:1: invalid YAML: found unexpected end of stream"),
        (
            "job_1: !!python/object:os.system {}\n",
            "etl.yaml:1:8: job_1: tag 'tag:yaml.org,2002:python/object:os.system' is not allowed; only plain data is read",
        ),
    ],
)
def test_each_bad_input_is_one_located_line(loader: WorkflowLoader, tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "etl.yaml", text)
    assert one_problem(loader, path) == f"{tmp_path}/{expected}"


def test_a_processor_of_the_wrong_kind_names_the_node(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = tmp_path / "mix"
    write(folder / "mix.yaml", "job_1:\n  job_type: python\n")
    write(
        folder / "mix.py",
        """
        from aiflowd import BashProcessor, job_config, user_define_operation
        with job_config("job_1"):
            user_define_operation(processor=BashProcessor("echo"), name="shell")
        """,
    )
    assert one_problem(loader, folder) == (
        f"{folder}/mix.yaml:2:3: job_1.job_type: node 'shell' has a BashProcessor; job type python needs a PythonProcessor subclass"
    )


def test_logic_in_both_yaml_and_python_is_an_error(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = tmp_path / "both"
    write(folder / "both.yaml", "job_1:\n  job_type: bash\n  bash_command: echo yaml\n")
    write(
        folder / "both.py",
        "from aiflowd import *\nwith job_config('job_1'):\n    user_define_operation(processor=BashProcessor('echo py'))\n",
    )
    assert "job_1.bash_command: job 'job_1' is also defined in both.py: give its logic in one place" in one_problem(loader, folder)


def test_yaml_processor_reference_problems(loader: WorkflowLoader, tmp_path: Path) -> None:
    folder = tmp_path / "refs"
    write(
        folder / "refs.yaml",
        """
        a:
          job_type: python
          processor: steps:Missing
        b:
          job_type: python
          processor: nosuchmodule:Thing
        c:
          job_type: python
          processor: steps:Train
          args: {epochz: 3}
        d:
          job_type: python
          processor: not a reference
        """,
    )
    write(
        folder / "steps.py",
        """
        from aiflowd import PythonProcessor
        class Train(PythonProcessor):
            def __init__(self, epochs):
                self.epochs = epochs
        """,
    )
    found = problems(loader, folder)
    assert f"{folder}/refs.yaml:3:3: a.processor: module 'steps' has no 'Missing'" in found
    assert f"{folder}/refs.yaml:6:3: b.processor: cannot import module 'nosuchmodule' (looked in the workflow folder and sys.path)" in found
    assert any(p.startswith(f"{folder}/refs.yaml:10:3: c.args: steps:Train: ") and "epochz" in p for p in found), found
    assert (
        f"{folder}/refs.yaml:13:3: d.processor: expected 'module:Class' (a module in the workflow folder), got 'not a reference'" in found
    )


JOB_A = "from aiflowd import *\nwith job_config('a'):\n    user_define_operation(processor=BashProcessor('true'))\n"

DEFINITION_FAILURES = [
    ("raise", "x = 1\nraise RuntimeError('boom')\n", ":2:1: RuntimeError: boom"),
    ("syntax", "def broken(:\n    pass\n", ":1:12: SyntaxError: invalid syntax"),
    ("exit", "import sys\nsys.exit(3)\n", ": the definition called exit(3) before it finished"),
    ("hard_exit", "import os\nos._exit(0)\n", ": the definition ended (exit status 0) before the compiler could report"),
    ("loop", "while True:\n    pass\n", ": the definition did not finish within 1s (compile_timeout)"),
    (
        "printer",
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
        ": the definition did not finish within 1s (compile_timeout)",
    ),
    (
        "misuse",
        "from aiflowd import user_define_operation\nuser_define_operation(processor=object())\n",
        ":2:1: WorkflowDefinitionError: user_define_operation() must be called inside",
    ),
    (
        "badrule",
        "from aiflowd import *\nwith job_config('a'):\n    user_define_operation(processor=BashProcessor('true'))\naction_on_job_status('a', 'nope')\n",
        ":4:0: upstream job 'nope' is not a job of this workflow",
    ),
]


@pytest.mark.parametrize(("name", "source", "expected"), DEFINITION_FAILURES, ids=[f[0] for f in DEFINITION_FAILURES])
def test_python_definition_failures_name_the_file(registry, tmp_path: Path, name: str, source: str, expected: str, warm: bool) -> None:
    loader = WorkflowLoader(registry, LoaderSettings(compile_timeout=1, warm_start=warm))
    folder = tmp_path / name
    write(folder / f"{name}.yaml", "{}\n")
    write(folder / f"{name}.py", source)
    found = one_problem(loader, folder)
    assert found.startswith(f"{folder}/{name}.py{expected}"), found


def test_all_problems_of_a_file_are_reported_together(loader: WorkflowLoader, tmp_path: Path) -> None:
    path = write(tmp_path / "many.yaml", "a:\n  job_tpye: bash\nb:\n  job_type: bash\n  bash_command: x\n  retries: -1\n")
    found = problems(loader, path)
    assert len(found) == 2, found  # a.job_tpye (no follow-on 'needs a job_type'), b.retries


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "properties: {owner: me}\n"])
def test_a_file_without_jobs_is_a_load_error(loader: WorkflowLoader, tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)  # an in-place save is empty for a moment: never a valid version
    assert one_problem(loader, path) == (
        f"{path}:1:1: no jobs: a workflow needs at least one, like 'job_1: {{job_type: bash, bash_command: echo hello}}'"
    )


def test_entries_that_cannot_be_read_are_listed_and_each_is_one_problem(loader: WorkflowLoader, tmp_path: Path) -> None:
    import os

    outside, folder = tmp_path / "outside", tmp_path / "workflows"
    (outside / "far").mkdir(parents=True)
    (outside / "secret.yaml").write_text("TOPSECRET: [\n")
    (outside / "far" / "far.yaml").write_text("a:\n  job_type: bash\n  bash_command: 'true'\n")
    folder.mkdir()
    (folder / "loop.yaml").symlink_to("loop.yaml")
    (folder / "ping").symlink_to("pong")
    (folder / "pong").symlink_to("ping")
    (folder / "gone.yaml").symlink_to("nothing.yaml")
    (folder / "secret.yaml").symlink_to(outside / "secret.yaml")
    (folder / "far").symlink_to(outside / "far")
    (folder / "notes.txt").symlink_to(outside / "secret.yaml")  # a file elsewhere that is no workflow: ignored
    os.mkfifo(folder / "pipe.yaml")
    write(folder / "defn" / "defn.yaml", "a:\n  job_type: bash\n  bash_command: 'true'\n")
    (folder / "defn" / "defn.py").symlink_to(outside / "secret.yaml")
    with open(os.fsencode(folder) + b"/odd\xff.yaml", "w") as fh:
        fh.write("a:\n  job_type: bash\n  bash_command: 'true'\n")
    write(folder / "fine.yaml", "a:\n  job_type: bash\n  bash_command: 'true'\n")

    found = discover(str(folder))
    assert [os.path.basename(path) for path in found] == sorted(
        ["defn", "far", "fine.yaml", "gone.yaml", "loop.yaml", "odd\udcff.yaml", "ping", "pipe.yaml", "pong", "secret.yaml"]
    )
    reported = {}
    for path in found:
        try:
            loader.load(path)
        except LoadError as err:
            [problem] = err.problems
            reported[os.path.basename(path)] = str(problem).split(": ", 1)[1]
    assert reported == {
        "defn": f"not read: a link out of {folder}/defn (to {outside}/secret.yaml)",
        "far": f"not read: a link out of {folder} (to {outside}/far)",
        "gone.yaml": "not read: a symbolic link to nothing.yaml, which does not exist",
        "loop.yaml": "not read: a symbolic link loop: not followed",
        "odd\udcff.yaml": "the name is not valid UTF-8 or holds control characters: rename it",
        "ping": "not read: a symbolic link loop: not followed",
        "pipe.yaml": "not read: a named pipe (FIFO), not a regular file",
        "pong": "not read: a symbolic link loop: not followed",
        "secret.yaml": f"not read: a link out of {folder} (to {outside}/secret.yaml)",
    }
    with pytest.raises(LoadError) as info:
        loader.load(os.fsdecode(os.fsencode(folder) + b"/odd\xff.yaml"))
    assert info.value.problems[0].file == f"{folder}/odd\\xff.yaml"  # printable: it never breaks a log or an answer


def test_sql_files_and_hashed_assets_are_only_regular_files_inside_the_folder(loader: WorkflowLoader, tmp_path: Path) -> None:
    import os

    (tmp_path / "secret.sql").write_text("TOPSECRET")
    folder = tmp_path / "w"
    write(folder / "w.yaml", "a:\n  job_type: flink\n  sql_file: link.sql\n")
    (folder / "link.sql").symlink_to(tmp_path / "secret.sql")
    os.mkfifo(folder / "queue")  # hashing it used to block for ever
    version = workflow_version(find_source(str(folder)))
    assert (
        one_problem(loader, folder)
        == f"{folder}/w.yaml:3:3: a.sql_file: cannot read 'link.sql': a link out of {folder} (to {tmp_path}/secret.sql)"
    )
    (tmp_path / "secret.sql").write_text("changed elsewhere")
    assert workflow_version(find_source(str(folder))) == version  # what a link out of the folder holds is never read


ODD_DEFINITIONS = [
    ("forks", "import os\nif os.fork() == 0:\n    os._exit(5)\nos.wait()\n" + JOB_A),
    ("forks_and_goes_on", "import os\nos.fork()\n" + JOB_A),
    ("prints_megabytes", "import sys\nfor _ in range(64):\n    sys.stdout.write('x' * 65536)\n" + JOB_A),
    ("exits_zero", "import sys\nsys.exit(0)\n"),
    ("hard_exit_status", "import os, sys\nsys.stdout.write('bye')\nsys.stdout.flush()\nos._exit(7)\n"),
    ("interrupted", "raise KeyboardInterrupt\n"),
    ("killed", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"),
    ("thread", "import threading, time\nthreading.Thread(target=time.sleep, args=(0.2,)).start()\n" + JOB_A),
    (
        "argv_and_path",
        "import sys, os\nassert sys.argv[0].endswith('compile_workflow.py'), sys.argv\nassert sys.path[0] == os.getcwd(), sys.path\n"
        + JOB_A,
    ),
]


@pytest.mark.parametrize(("name", "source"), ODD_DEFINITIONS, ids=[d[0] for d in ODD_DEFINITIONS])
def test_a_definition_compiles_warm_exactly_as_cold(registry, tmp_path: Path, name: str, source: str) -> None:  # type: ignore[no-untyped-def]
    outcomes = []
    for warm in (True, False):
        folder = tmp_path / ("warm" if warm else "cold") / name
        write(folder / f"{name}.yaml", "{}\n")
        write(folder / f"{name}.py", source)
        loader = WorkflowLoader(registry, LoaderSettings(compile_timeout=10, warm_start=warm))
        try:
            outcomes.append(sorted(loader.load(str(folder)).workflow.jobs))
        except LoadError as err:
            outcomes.append([str(p).replace(str(folder), "FOLDER") for p in err.problems])
    assert outcomes[0] == outcomes[1]


def test_a_warm_compile_runs_in_a_fork_of_the_fork_server(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = "import os\nraise RuntimeError(b'spawner' in open(f'/proc/{os.getppid()}/cmdline', 'rb').read().split(b'\\0'))\n"
    said = {}
    for warm in (True, False):
        folder = tmp_path / ("warm" if warm else "cold") / "who"
        write(folder / "who.yaml", "{}\n")
        write(folder / "who.py", source)
        said[warm] = one_problem(WorkflowLoader(registry, LoaderSettings(compile_timeout=10, warm_start=warm)), folder)
    assert said[True].endswith("RuntimeError: True"), said[True]
    assert said[False].endswith("RuntimeError: False"), said[False]
