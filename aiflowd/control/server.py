"""The daemon's control server: accepts aiflowctl connections, checks who they are, dispatches.

The socket is created 0660 in a folder the daemon owns (never world-accessible), or
received from systemd's socket activation. Each peer is identified with SO_PEERCRED:
root and the daemon's own user may do everything, members of ``control_group`` may read,
anyone else is refused. Requests are bounded in size; malformed or hostile input gets
an error answer or a closed connection, never a crash.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from aiflowd.control.protocol import (
    BAD_REQUEST,
    FORBIDDEN,
    INTERNAL,
    MAX_REQUEST_BYTES,
    UNKNOWN_METHOD,
    ControlError,
    encode,
    parse_request,
)

log = structlog.get_logger("aiflowd.control")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    """A control method; ``write`` ones need root or the daemon's own user."""

    handler: Handler
    write: bool = False


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def bind_socket(path: str, group: str | None = None) -> socket.socket:
    """A listening socket at ``path``, 0660 from its creation; refuses if a daemon answers there.

    With ``group``, the socket belongs to that group, so its members can connect (and read).
    """
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o750, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # left by a daemon that died
        else:
            raise RuntimeError(f"another aiflowd already serves {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o117)  # the socket is born 0660: no moment where anyone else may connect
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    gid = _group_id(group)
    if gid is not None:
        os.chown(path, -1, gid)
    sock.listen(64)
    return sock


def peer_of(stream: SocketStream) -> Peer:
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    pid, uid, gid = struct.unpack("3i", raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return Peer(pid, uid, gid)


class ControlServer:
    """Serves control methods on a listening Unix socket."""

    def __init__(self, sock: socket.socket, methods: dict[str, Method], control_group: str | None = None) -> None:
        self.sock = sock
        self.methods = methods
        self.owner = os.getuid()
        self.read_gid = _group_id(control_group)

    async def serve(self) -> None:
        listener = await anyio.abc.SocketListener.from_socket(self.sock)
        async with listener:
            await listener.serve(self._connection)

    def may(self, peer: Peer, method: Method) -> bool:
        if peer.uid in (0, self.owner):
            return True
        if method.write or self.read_gid is None:
            return False
        return peer.gid == self.read_gid or _in_group(peer.uid, self.read_gid)

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            try:
                peer = peer_of(stream)
            except OSError:
                return
            if peer.uid not in (0, self.owner) and (self.read_gid is None or not self.may(peer, Method(_noop))):
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await stream.send(
                        encode({"id": None, "error": {"code": FORBIDDEN, "message": f"uid {peer.uid} may not use this socket"}})
                    )
                return
            reader = BufferedByteReceiveStream(stream)
            while True:
                try:
                    line = await reader.receive_until(b"\n", MAX_REQUEST_BYTES)
                except anyio.DelimiterNotFound:
                    await self._send(
                        stream, {"id": None, "error": {"code": BAD_REQUEST, "message": f"request longer than {MAX_REQUEST_BYTES} bytes"}}
                    )
                    return
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                if not line.strip():
                    continue
                if not await self._answer(stream, peer, line):
                    return

    async def _answer(self, stream: SocketStream, peer: Peer, line: bytes) -> bool:
        request_id: Any = None
        try:
            request_id, name, params = parse_request(line)
            method = self.methods.get(name)
            if method is None:
                raise ControlError(UNKNOWN_METHOD, f"unknown method '{name}'")
            if not self.may(peer, method):
                raise ControlError(FORBIDDEN, f"uid {peer.uid} may only read; '{name}' changes things")
            result = await method.handler(params)
            if isinstance(result, AsyncIterator):
                async for chunk in result:
                    if not await self._send(stream, {"id": request_id, "result": chunk, "more": True}):
                        return False
                return await self._send(stream, {"id": request_id, "result": None})
            return await self._send(stream, {"id": request_id, "result": result})
        except ControlError as err:
            return await self._send(stream, {"id": request_id, "error": {"code": err.code, "message": err.message}})
        except Exception as err:
            log.exception("control method failed")
            return await self._send(stream, {"id": request_id, "error": {"code": INTERNAL, "message": f"{type(err).__name__}: {err}"}})

    async def _send(self, stream: SocketStream, message: dict[str, Any]) -> bool:
        try:
            await stream.send(encode(message))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True


async def _noop(params: dict[str, Any]) -> None:
    return None


def _group_id(name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        try:
            return int(name)
        except ValueError:
            return None


def _in_group(uid: int, gid: int) -> bool:
    try:
        user = pwd.getpwuid(uid).pw_name
        return user in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False
