"""The strict YAML reader: plain data only, and no file can hang or exhaust it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from aiflowd.workflows.errors import LoadError
from aiflowd.workflows.yamlfile import MAX_DEPTH, MAX_FILE_BYTES, read_yaml


def error_of(text: str | bytes) -> str:
    with pytest.raises(LoadError) as info:
        read_yaml("f.yaml", text)
    assert len(info.value.problems) == 1
    return str(info.value.problems[0])


def test_positions_of_keys_and_items() -> None:
    doc = read_yaml("f.yaml", "a:\n  b: [1, {c: 2}]\n  when: 2024-01-02\n")
    assert doc.data == {"a": {"b": [1, {"c": 2}], "when": "2024-01-02"}}
    assert doc.position(("a", "b")) == (2, 3)
    assert doc.position(("a", "b", 1, "c")) == (2, 11)
    assert doc.position(("a", "b", 1, "c", "missing")) == (2, 11)


def test_billion_laughs_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
    started = time.monotonic()
    message = error_of("\n".join(lines) + "\n")
    assert "more than 100000 values (is an alias expanded too often?)" in message
    assert time.monotonic() - started < 5


def test_deep_nesting_is_refused() -> None:
    text = "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
    assert f"nested deeper than {MAX_DEPTH} levels" in error_of(text)


def test_huge_file_is_refused() -> None:
    assert f"file is larger than {MAX_FILE_BYTES} bytes" in error_of(b"#" * (MAX_FILE_BYTES + 1))


def test_binary_file_is_refused() -> None:
    assert error_of(b"a: \xff\xfe\n") == "f.yaml: not UTF-8 text (byte 3)"


def test_merge_keys_and_complex_keys_are_refused() -> None:
    assert "merge keys" in error_of("base: &b {x: 1}\njob:\n  <<: *b\n")
    assert "a key must be a plain value" in error_of("? [a, b]\n: 1\n")


def test_empty_file_is_an_empty_mapping() -> None:
    assert read_yaml("f.yaml", "# nothing\n").data == {}


def test_only_regular_files_are_read_and_never_by_blocking(tmp_path: Path) -> None:

    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(LoadError) as info:
        read_yaml(str(tmp_path / "pipe.yaml"))  # used to wait for a writer for ever
    assert str(info.value) == f"{tmp_path}/pipe.yaml: not read: a named pipe (FIFO), not a regular file"
    (tmp_path / "outside.yaml").write_text("TOPSECRET: [\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    with pytest.raises(LoadError) as info:
        read_yaml(str(tmp_path / "in" / "link.yaml"), inside=str(tmp_path / "in"))
    assert "TOPSECRET" not in str(info.value) and "a link out of" in str(info.value)


def test_printable_escapes_bytes_that_are_not_utf8_and_control_characters() -> None:
    from aiflowd.workflows.yamlfile import printable

    assert printable("plain name.yaml") == "plain name.yaml"
    assert printable("bad\udcff.yaml") == "bad\\xff.yaml"
    assert printable("two\nlines") == "two\\nlines"
