"""Authoring aids: validate's hints for the common YAML traps, the note on a missing Flink
extra, help on every option, and shell completion of workflow and job names."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiflowd.cli import aiflowctl
from aiflowd.cli import aiflowd as aiflowd_cli

from .conftest import REPO, wait_for


def validate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = aiflowctl.main(["validate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


# -- YAML traps ---------------------------------------------------------------------


def test_a_tab_in_an_indentation_is_named_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = write(tmp_path / "wf.yaml", "job:\n  job_type: bash\n\tbash_command: echo hi\n")
    code, out, _ = validate(capsys, wf)
    assert code == 1
    assert out == f"{wf}:3:1: tabs are not allowed for indentation: use spaces\n"


def test_a_tab_after_spaces_is_named_at_its_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = write(tmp_path / "wf.yaml", "job:\n  job_type: bash\n  action_on_job_status:\n  \t- upstream_job: a\n")
    assert validate(capsys, wf)[1] == f"{wf}:4:3: tabs are not allowed for indentation: use spaces\n"


def test_an_unquoted_colon_in_a_command_says_quote_the_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = write(tmp_path / "wf.yaml", "job:\n  job_type: bash\n  bash_command: echo a: b\n")
    code, out, _ = validate(capsys, wf)
    assert code == 1
    assert out == (
        f"{wf}:3:3: the value of bash_command holds ': ', which YAML reads as another key: "
        "quote the value, like bash_command: 'echo a: b'\n"
    )
    # The suggestion is valid YAML that gives the command back, quotes and all.
    write(tmp_path / "fixed.yaml", "job:\n  job_type: bash\n  bash_command: 'it''s a: b'\n")
    assert validate(capsys, str(tmp_path / "fixed.yaml"))[0] == 0


def test_a_colon_in_a_quoted_value_is_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = write(tmp_path / "wf.yaml", 'job:\n  job_type: bash\n  bash_command: "echo a: b"\n')
    assert validate(capsys, wf)[:2] == (0, "1 workflow(s) valid\n")


def test_other_yaml_errors_keep_the_parsers_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = write(tmp_path / "wf.yaml", "job:\n  job_type: [bash\n")
    out = validate(capsys, wf)[1]
    assert out.startswith(f"{wf}:") and "invalid YAML:" in out and "tab" not in out and "quote" not in out


def test_a_bash_job_without_bash_command_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = write(tmp_path / "wf.yaml", "job:\n  job_type: bash\n  retries: 1\n")
    assert validate(capsys, wf)[1] == f"{wf}:1:1: job: missing bash_command: a bash job needs it, or a 'processor: module:Class'\n"


def test_a_job_of_a_workflow_folder_may_be_defined_in_its_python(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "flow" / "flow.yaml", "job:\n  job_type: bash\n")
    out = validate(capsys, str(tmp_path / "flow"))[1]
    assert out.endswith("job: missing bash_command: a bash job needs it, or a 'processor: module:Class', or its nodes in flow.py\n")


@pytest.mark.parametrize(
    ("job_type", "missing"),
    [("flink", "missing main_jar_file, sql or sql_file: a flink job needs one of them"), ("python", "missing processor: a python job")],
)
def test_other_job_types_name_their_keys_not_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str], job_type: str, missing: str) -> None:
    wf = write(tmp_path / "wf.yaml", f"job:\n  job_type: {job_type}\n")
    out = validate(capsys, wf)[1]
    assert missing in out and "nodes" not in out and "Processor" not in out


def test_a_definition_that_fails_to_compile_is_the_only_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        tmp_path / "flow" / "flow.yaml",
        "a:\n  job_type: bash\nb:\n  job_type: python\nc:\n  job_type: bash\n  action_on_job_status: [{upstream_job: d}]\n",
    )
    write(tmp_path / "flow" / "flow.py", "def broken(:\n")
    code, out, _ = validate(capsys, str(tmp_path / "flow"))
    assert code == 1
    [line] = out.splitlines()
    assert line.startswith(f"{tmp_path / 'flow' / 'flow.py'}:1:") and "SyntaxError" in line


def test_a_job_with_its_own_logic_is_still_checked_when_the_definition_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "flow" / "flow.yaml", "a:\n  job_type: bash\n  bash_command: echo\n  retries: many\n")
    write(tmp_path / "flow" / "flow.py", "raise RuntimeError('no')\n")
    lines = validate(capsys, str(tmp_path / "flow"))[1].splitlines()
    assert len(lines) == 2
    assert any("RuntimeError: no" in line for line in lines) and any("a.retries: must be a whole number" in line for line in lines)


# -- Flink workflows without the flink extra ----------------------------------------------

FLINK_EXAMPLES = [str(REPO / "examples" / "workflows" / name) for name in ("flink_wordcount", "flink_streaming")]
NOTE = "note: the flink extra is not installed (pip install 'aiflowd[flink]'): Flink jobs were checked but cannot run here\n"


def pyflink_installed(monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    """apache-flink present or not, as the flink job type asks (``find_spec('pyflink')``)."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        if name == "pyflink":
            return importlib.util.spec_from_loader("pyflink", loader=None) if installed else None
        return real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_flink_workflows_validate_with_one_note_when_the_extra_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pyflink_installed(monkeypatch, False)
    bash = write(tmp_path / "plain.yaml", "job: {job_type: bash, bash_command: echo}\n")
    code, out, err = validate(capsys, *FLINK_EXAMPLES, bash)
    assert (code, out, err) == (0, "3 workflow(s) valid\n", NOTE)  # checked, valid, and said once


def test_the_note_comes_with_an_invalid_flink_workflow_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pyflink_installed(monkeypatch, False)
    wf = write(tmp_path / "wf.yaml", "job:\n  job_type: flink\n  sql: 'select 1;'\n  parallelism: 2\n")
    code, out, err = validate(capsys, wf)
    assert code == 1 and "job.parallelism: unknown key" in out and err == NOTE


def test_the_note_is_in_the_json_report(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pyflink_installed(monkeypatch, False)
    bash = write(tmp_path / "plain.yaml", "job: {job_type: bash, bash_command: echo}\n")
    code = aiflowctl.main(["validate", "--json", FLINK_EXAMPLES[1], bash])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report[0]["notes"] == [NOTE.removeprefix("note: ").strip()] and "notes" not in report[1]


def test_no_note_when_flink_can_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pyflink_installed(monkeypatch, True)
    assert validate(capsys, *FLINK_EXAMPLES) == (0, "2 workflow(s) valid\n", "")
    # A Flink distribution of the config's also lets Flink jobs run, as the flink job type finds it.
    pyflink_installed(monkeypatch, False)
    config = write(tmp_path / "aiflowd.yaml", f"workflows_dir: {tmp_path}\nflink:\n  flink_home: {tmp_path}\n")
    assert validate(capsys, "--config", config, *FLINK_EXAMPLES) == (0, "2 workflow(s) valid\n", "")


# -- help on every option ---------------------------------------------------------------


def _unhelped(parser: argparse.ArgumentParser, where: str) -> list[str]:
    missing = []
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        if not action.help:
            missing.append(f"{where} {name}")
        if isinstance(action, argparse._SubParsersAction):
            described = {choice.dest: choice.help for choice in action._choices_actions}
            for command, sub in action.choices.items():
                if not described.get(command):
                    missing.append(f"{where} {command}")
                missing += _unhelped(sub, f"{where} {command}")
    return missing


@pytest.mark.parametrize("tool", [aiflowctl, aiflowd_cli], ids=["aiflowctl", "aiflowd"])
def test_every_option_and_command_has_help(tool: object) -> None:
    parser = tool.build_parser()  # type: ignore[attr-defined]
    assert _unhelped(parser, parser.prog) == []


# -- shell completion -------------------------------------------------------------------


def complete(tool: str, line: str, tmp_path: Path, cwd: Path | None = None) -> list[str]:
    """What the shell would offer for ``line``: the real tool, run as argcomplete's shell code runs it."""
    out = tmp_path / "completions"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_SHELL": "bash",
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
    }
    env.pop("AIFLOWD_SOCKET", None)
    result = subprocess.run(
        [sys.executable, "-m", f"aiflowd.cli.{tool}"], env=env, cwd=cwd or tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result
    return sorted(w.strip() for w in out.read_text().split("\n") if w.strip())


def test_completion_prints_shell_code_for_both_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert aiflowctl.main(["completion", "bash"]) == 0
    code = capsys.readouterr().out
    assert "complete" in code and "aiflowctl" in code and "aiflowd" in code
    assert aiflowctl.main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("#compdef aiflowctl aiflowd")


def test_commands_complete_without_a_daemon_and_names_complete_to_nothing(tmp_path: Path) -> None:
    assert complete("aiflowctl", "aiflowctl wor", tmp_path) == ["workflow"]
    assert complete("aiflowctl", "aiflowctl workflow st", tmp_path) == ["start-execution", "stop-execution"]
    # No daemon: no names, no error printed into the command line (complete() checks).
    assert complete("aiflowctl", f"aiflowctl --socket {tmp_path}/none.sock workflow show x", tmp_path) == []


def test_a_daemon_that_never_answers_completes_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(tmp_path / "s.sock"))
        silent.listen(8)  # connects succeed; nobody ever answers
        args = argparse.Namespace(socket=str(tmp_path / "s.sock"), config=None)
        assert aiflowctl.complete_workflows("", args) == []


def test_workflow_and_job_names_come_from_the_daemon(tmp_path: Path) -> None:
    from .daemon_harness import Daemon

    daemon = Daemon(tmp_path / "d")
    try:
        daemon.write_workflow("etl.yaml", "extract: {job_type: bash, bash_command: 'true'}\nload: {job_type: bash, bash_command: 'true'}\n")
        daemon.write_workflow("report.yaml", "render: {job_type: bash, bash_command: 'true'}\n")
        daemon.start()
        wait_for(lambda: daemon.known("etl") and daemon.known("report"), timeout=30)
        sock = f"aiflowctl --socket {daemon.socket}"
        assert complete("aiflowctl", f"{sock} workflow show ", tmp_path) == ["etl", "report"]
        assert complete("aiflowctl", f"{sock} workflow show e", tmp_path) == ["etl"]
        assert complete("aiflowctl", f"{sock} job logs etl ", tmp_path) == ["extract", "load"]
        assert complete("aiflowctl", f"{sock} job start-execution etl l", tmp_path) == ["load"]
        assert complete("aiflowctl", f"{sock} job logs nope ", tmp_path) == []  # refused by the daemon: nothing
        # The daemon is found as every command finds it: here through --config.
        assert complete("aiflowctl", f"aiflowctl --config {daemon.config} workflow list-executions r", tmp_path) == ["report"]
    finally:
        daemon.close()


def test_run_once_completes_the_jobs_of_the_workflow_file(tmp_path: Path) -> None:
    write(
        tmp_path / "wf.yaml", "periodic_config: {interval: 5m}\nextract: {job_type: bash, bash_command: 'true'}\nload: {job_type: bash}\n"
    )
    assert complete("aiflowd", "aiflowd run-once wf.yaml --job ", tmp_path) == ["extract", "load"]
    assert complete("aiflowd", "aiflowd run-once missing.yaml --job ", tmp_path) == []
    assert complete("aiflowd", "aiflowd sc", tmp_path) == ["schema"]
