"""aiflowctl's side of the control socket: blocking, small, quick to import."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

from aiflowd.control.protocol import ControlError, encode


class Unreachable(Exception):
    """No daemon answers on the socket."""


class ControlClient:
    def __init__(self, path: str, timeout: float | None = 30.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as err:
            self.sock.close()
            raise Unreachable(f"no aiflowd answers at {path} ({err.strerror or err})") from err
        self.reader = self.sock.makefile("rb")
        self.next_id = 1

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
        """The chunks of a streaming answer (one for a plain one)."""
        request_id = self.next_id
        self.next_id += 1
        self.sock.sendall(encode({"id": request_id, "method": method, "params": params}))
        while True:
            line = self.reader.readline()
            if not line:
                raise Unreachable("the daemon closed the connection")
            answer = json.loads(line)
            if "error" in answer:
                raise ControlError(answer["error"].get("code", "error"), answer["error"].get("message", ""))
            self._last = answer.get("result")
            if answer.get("more"):
                yield self._last
                continue
            if self._last is not None:
                yield self._last
            return
