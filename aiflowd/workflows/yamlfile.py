"""Reads YAML safely and strictly, remembering where every key and value came from.

Only plain data is built (no Python tags); duplicate keys are errors; the file's size,
its nesting and the nodes alias expansion may produce are bounded, so no file can hang
or exhaust the reader. Only regular files are read, never by blocking on open (a FIFO
would), and, given the folder they must be in, never through a link leaving it: what a
problem line quotes is then always the user's own text.
"""

from __future__ import annotations

import datetime
import errno
import functools
import os
import stat
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import yaml

from aiflowd.workflows.errors import LoadError, Problem

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000

Path = tuple[str | int, ...]

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


@dataclass
class YamlDocument:
    """Plain data read from a file, plus the line and column of every key path in it."""

    file: str
    data: Any
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: Path) -> tuple[int, int]:
        """Where a key path is, or its nearest known parent (1-based; 0, 0 when unknown)."""
        while True:
            if path in self.positions:
                return self.positions[path]
            if not path:
                return (0, 0)
            path = path[:-1]

    def problem(self, path: Path, message: str) -> Problem:
        line, column = self.position(path)
        return Problem(self.file, line, column, format_path(path), message)

    def problem_at(self, path: Path) -> Callable[[str], Problem]:
        """A reporter of problems at ``path``, for checks that come later."""
        return functools.partial(self.problem, path)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class RefusedFile(OSError):
    """A path that is not read: not a regular file, a link loop, or a link leaving its folder."""


_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


def printable(text: str) -> str:
    """``text`` safe to show on one line: bytes that are not UTF-8 (surrogate escapes from
    ``os.fsdecode``) and control characters become backslash escapes."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif 0xDC80 <= ord(char) <= 0xDCFF:
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def refusal(path: str, inside: str | None = None) -> str | None:
    """Why ``path`` must not be read, or None for a regular file (inside ``inside`` when given).

    Links are resolved without reading anything: a loop or a link to nothing is named as
    such, and a link whose target is outside ``inside`` is refused, whatever it points to.
    """
    return _resolve(path, inside)[0]


def _resolve(path: str, inside: str | None) -> tuple[str | None, str]:
    """(why ``path`` is not read or None, the path to open: ``path`` itself or its target)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as err:
        return err.strerror or str(err), path
    if not stat.S_ISLNK(mode) and (inside is None or os.path.dirname(os.path.abspath(path)) == os.path.abspath(inside)):
        return _not_regular(mode), path  # no link on the way: nothing to resolve (the common case, and fast)
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symbolic link loop: not followed", path
        if err.errno == errno.ENOENT and os.path.islink(path):
            return f"a symbolic link to {printable(os.readlink(path))}, which does not exist", path
        return err.strerror or str(err), path
    if inside is not None:
        folder = os.path.realpath(inside)
        if real != folder and not real.startswith(folder.rstrip(os.sep) + os.sep):
            return f"a link out of {printable(inside)} (to {printable(real)})", path
    try:
        return _not_regular(os.stat(real).st_mode), real
    except OSError as err:
        return err.strerror or str(err), path


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return f"{_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a regular file"


def open_regular(path: str, inside: str | None = None) -> BinaryIO:
    """Open a regular file for reading (``refusal`` decides); never blocks on the open.

    Raises RefusedFile (its ``strerror`` says why) or OSError. The check is repeated on
    the open descriptor, so a file swapped for a FIFO in between is refused, not waited on.
    """
    reason, real = _resolve(path, inside)
    if reason is not None:
        raise RefusedFile(errno.EPERM, reason, path)
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        reason = _not_regular(os.fstat(fd).st_mode)
        if reason is not None:
            raise RefusedFile(errno.EPERM, reason, path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_yaml(file: str, text: str | bytes | None = None, inside: str | None = None) -> YamlDocument:
    """Read one YAML document; raise LoadError with one located problem on bad input.

    ``inside``: the folder the file must be in (links leaving it are not read).
    """
    if text is None:
        try:
            with open_regular(file, inside) as fh:
                text = fh.read(MAX_FILE_BYTES + 1)
        except RefusedFile as err:
            raise LoadError([Problem(file, 0, 0, "", f"not read: {err.strerror}")]) from err
        except OSError as err:
            raise LoadError([Problem(file, 0, 0, "", f"cannot read: {err.strerror or err}")]) from err
    if len(text) > MAX_FILE_BYTES:
        raise LoadError([Problem(file, 0, 0, "", f"file is larger than {MAX_FILE_BYTES} bytes")])
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise LoadError([Problem(file, 0, 0, "", f"not UTF-8 text (byte {err.start})")]) from err
    try:
        node = yaml.compose(text, Loader=_SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = f"invalid YAML: {err.problem or err.context}"
        hint = yaml_hint(text, line, str(err.problem or err.context))
        if hint is not None:
            line, column, message = hint
        raise LoadError([Problem(file, line, column, "", message)]) from err
    except yaml.YAMLError as err:
        raise LoadError([Problem(file, 0, 0, "", f"invalid YAML: {err}")]) from err
    document = YamlDocument(file, None)
    if node is None:
        document.data = {}
        return document
    builder = _Builder(document)
    document.data = builder.build(node, (), 0)
    return document


def yaml_hint(text: str, line: int, problem: str) -> tuple[int, int, str] | None:
    """The common traps behind a YAML parse error, said in the author's terms: (line, column, message).

    A tab in an indentation (YAML allows only spaces there), and a plain value holding
    ``': '`` (``bash_command: echo a: b``), which YAML reads as a second mapping.
    """
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    source = lines[line - 1]
    indent = source[: len(source) - len(source.lstrip(" \t"))]
    if "\t" in indent:
        return line, indent.index("\t") + 1, "tabs are not allowed for indentation: use spaces"
    if "mapping values are not allowed" in problem:
        key, sep, value = source.lstrip(" -").partition(": ")
        value = value.strip()
        if sep and value and value[0] not in "\"'{[|>":
            quoted = "'" + value.replace("'", "''") + "'"
            column = len(source) - len(source.lstrip(" -")) + 1
            return line, column, f"the value of {key} holds ': ', which YAML reads as another key: quote the value, like {key}: {quoted}"
    return None


class _Builder:
    def __init__(self, document: YamlDocument) -> None:
        self.document = document
        self.nodes = 0
        self.scalars = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, path: Path, message: str) -> LoadError:
        mark = node.start_mark
        return LoadError([Problem(self.document.file, mark.line + 1, mark.column + 1, format_path(path), message)])

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(node, path, f"more than {MAX_NODES} values (is an alias expanded too often?)")
        if depth > MAX_DEPTH:
            raise self.fail(node, path, f"nested deeper than {MAX_DEPTH} levels")
        if node.tag not in _PLAIN_TAGS:
            raise self.fail(node, path, f"tag {node.tag!r} is not allowed; only plain data is read")
        self.document.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            value = self.scalars.construct_object(node)
            if isinstance(value, datetime.date):
                return node.value
            return value
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.fail(key_node, path, "merge keys ('<<') are not supported; write the keys out")
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, path, "a key must be a plain value")
            key = self.build(key_node, (*path, "<key>"), depth + 1)
            if not isinstance(key, Hashable):
                raise self.fail(key_node, path, "a key must be a plain value")
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                first = self.document.positions.get((*path, key), (0, 0))[0]
                raise self.fail(key_node, (*path, key), f"duplicate key (first defined on line {first})")
            self.document.positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = self.build(value_node, (*path, key), depth + 1)
        return result
