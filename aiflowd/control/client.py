"""aiflowctl's side of the control socket: blocking, small, quick to import (the stdlib only).

Every failure is one of two exceptions with a one-line message: ``Unreachable`` (no
daemon answers, or not in time) and ``Refused`` (the socket refuses this user); the
daemon's own refusals are ``ControlError``.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import socket
import stat
import time
from collections.abc import Iterator
from typing import Any

from aiflowd.control.protocol import ControlError, encode

#: How long a refused or full-backlog connect is tried again (a daemon restarting, a burst
#: of calls) before the daemon counts as unreachable.
CONNECT_RETRY = 2.0
_CONNECT_AGAIN = {errno.EAGAIN, errno.ECONNREFUSED}


class Unreachable(Exception):
    """No daemon answers on the socket (or not within the time-out)."""


class Refused(Exception):
    """The socket refuses this user: its permissions say who may connect."""


class ControlClient:
    def __init__(self, path: str, timeout: float | None = 30.0, connect_retry: float = CONNECT_RETRY) -> None:
        self.path = path
        self.timeout = timeout
        self.sock = self._connect(connect_retry if timeout is None else min(connect_retry, timeout))
        self.reader = self.sock.makefile("rb")
        self.next_id = 1
        self._last: Any = None

    def _connect(self, retry: float) -> socket.socket:
        deadline = time.monotonic() + retry
        pause = 0.01
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
                return sock
            except PermissionError as err:
                sock.close()
                raise Refused(refusal(self.path)) from err
            except OSError as err:
                sock.close()
                if err.errno in _CONNECT_AGAIN and time.monotonic() < deadline:
                    time.sleep(pause)  # a full backlog or a daemon binding its socket again
                    pause = min(pause * 2, 0.2)
                    continue
                raise Unreachable(f"no aiflowd answers at {self.path} ({err.strerror or err})") from err

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> Any:
        """One request, one answer; ControlError when the daemon refuses."""
        for _ in self.stream(method, **params):
            pass
        return self._last

    def stream(self, method: str, **params: Any) -> Iterator[Any]:
        """The chunks of a streaming answer (one for a plain one), as they arrive."""
        request_id = self.next_id
        self.next_id += 1
        try:
            self.sock.sendall(encode({"id": request_id, "method": method, "params": params}))
        except OSError as err:
            raise self._lost(err) from err
        while True:
            try:
                line = self.reader.readline()
            except OSError as err:
                raise self._lost(err) from err
            if not line:
                raise Unreachable(f"aiflowd at {self.path} closed the connection before answering")
            try:
                answer = json.loads(line)
            except ValueError as err:
                raise Unreachable(f"aiflowd at {self.path} sent an answer that is not JSON: {err}") from err
            if "error" in answer:
                raise ControlError(answer["error"].get("code", "error"), answer["error"].get("message", ""))
            self._last = answer.get("result")
            if answer.get("more"):
                yield self._last
                continue
            if self._last is not None:
                yield self._last
            return

    def _lost(self, err: OSError) -> Exception:
        if isinstance(err, TimeoutError):
            return Unreachable(f"aiflowd at {self.path} did not answer within {self.timeout:g}s (try --timeout)")
        return Unreachable(f"the connection to aiflowd at {self.path} broke ({err.strerror or err})")


def refusal(path: str) -> str:
    """Why this user may not open the socket at ``path``, and who may, from its permissions."""
    me = _name(os.getuid())
    try:
        info = os.stat(path)
    except OSError:
        return f"{path} refuses {me}: permission denied on the way to the socket"
    owner = "root" if info.st_uid == 0 else f"{_name(info.st_uid)} and root"
    if info.st_mode & stat.S_IRWXG:
        try:
            group = grp.getgrgid(info.st_gid).gr_name
        except KeyError:
            group = str(info.st_gid)
        who = f"only {owner} and members of group '{group}' (the control_group, who may read)"
        return f"the socket {path} refuses {me}: {who} may use it"
    return f"the socket {path} refuses {me}: only {owner} may use it (the daemon sets no control_group)"


def _name(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
