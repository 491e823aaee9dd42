"""The daemon's control server: accepts aiflowctl connections, checks who they are, dispatches.

The socket is created 0660 (0600 without a ``control_group``) in a folder the daemon
owns (never world-accessible), or received from systemd's socket activation. Each peer
is identified with SO_PEERCRED: root and the daemon's own user may do everything,
members of ``control_group`` may read, anyone else is refused. Requests are bounded in
size and time; malformed, slow or hostile input gets an error answer or a closed
connection, never a crash.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.abc import SocketListener, SocketStream, TaskGroup, TaskStatus

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
from aiflowd.supervision import Backoff, Restarts, supervise

log = structlog.get_logger("aiflowd.control")

#: Connections the kernel queues before we accept them: many aiflowctl calls at once
#: (a script's loop, a monitoring burst) must wait in line, not be refused.
LISTEN_BACKLOG = max(socket.SOMAXCONN, 1024)
#: accept() failures that mean "not now" (out of descriptors or memory, a peer that left).
_ACCEPT_AGAIN = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPROTO}
ACCEPT_BACKOFF_START = 0.05
ACCEPT_BACKOFF_MAX = 1.0

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
    """A listening socket at ``path``, born with its final mode; refuses if a daemon answers there.

    With ``group`` the socket is 0660 and belongs to that group, so its members can connect
    (and read); without one it is 0600: nobody but the daemon's user (and root) may connect.
    What is already at ``path`` is removed only when that is safe: a socket nobody answers
    on (left by a daemon that died) or a symbolic link that leads nowhere. Anything else
    is a ``SocketPathError`` with one line saying what is there.
    """
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o750, exist_ok=True)
    _clear_stale(path)
    gid = _group_id(group)
    mode = 0o660 if gid is not None else 0o600
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o777 & ~mode)  # the socket is born with its mode: no moment where anyone else may connect
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, mode)
    if gid is not None:
        os.chown(path, -1, gid)
    sock.listen(LISTEN_BACKLOG)
    return sock


class SocketPathError(RuntimeError):
    """Something other than a stale socket is where the control socket should be."""


def _clear_stale(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        if os.path.exists(path):
            raise SocketPathError(f"{path}: a symbolic link to {os.readlink(path)} is where the control socket goes; remove it")
        log.warning("removed a dangling symbolic link at the control socket's path", path=path, target=os.readlink(path))
        os.unlink(path)
        return
    if not stat.S_ISSOCK(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a file that is not a socket"
        raise SocketPathError(f"{path}: {kind} is where the control socket goes; remove it or set another control_socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # left by a daemon that died: nobody listens on it
    except OSError as err:
        raise SocketPathError(f"{path}: cannot tell whether a daemon answers there ({err.strerror or err})") from err
    else:
        raise SocketPathError(f"{path}: another aiflowd already answers there")
    finally:
        probe.close()


def peer_of(stream: SocketStream) -> Peer:
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    pid, uid, gid = struct.unpack("3i", raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return Peer(pid, uid, gid)


class _Closing(Exception):
    """The connection ends: the peer went, stayed idle or took too long with a request."""


class ControlServer:
    """Serves control methods on a listening Unix socket.

    The accept loop and each connection are contained: the loop waits and accepts again
    when the process runs out of descriptors (EMFILE), restarts after any other failure,
    and a connection that fails is closed and counted, never more. Idle connections and
    half-sent requests are closed after ``idle_timeout`` and ``request_timeout``.
    """

    def __init__(
        self,
        sock: socket.socket,
        methods: dict[str, Method],
        control_group: str | None = None,
        *,
        idle_timeout: float = 30.0,
        request_timeout: float = 5.0,
        restarts: Restarts | None = None,
    ) -> None:
        self.sock = sock
        self.methods = methods
        self.owner = os.getuid()
        self.control_group = control_group
        self.read_gid = _group_id(control_group)
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.restarts = restarts or Restarts()
        self.connections = 0

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Accept connections until cancelled; the listening socket is closed on the way out."""
        listener = await anyio.abc.SocketListener.from_socket(self.sock)
        try:
            async with anyio.create_task_group() as connections:
                await connections.start(supervise, "control server", partial(self._accept_loop, listener, connections), self.restarts)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()

    async def _accept_loop(
        self, listener: SocketListener, connections: TaskGroup, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        backoff = Backoff(ACCEPT_BACKOFF_START, ACCEPT_BACKOFF_MAX)
        short = False
        while True:
            try:
                stream = await listener.accept()
            except anyio.BrokenResourceError as err:
                cause = err.__cause__
                if not isinstance(cause, OSError) or cause.errno not in _ACCEPT_AGAIN:
                    raise
                if not short:
                    log.warning("cannot accept a connection now; waiting", error=cause.strerror, open_connections=self.connections)
                    short = True
                await backoff.wait()  # the pending connection waits in the backlog; no busy loop meanwhile
                continue
            if short:
                log.info("accepting connections again", open_connections=self.connections)
                short = False
            backoff.reset()
            connections.start_soon(self._connection, stream)

    def may(self, peer: Peer, method: Method) -> bool:
        if peer.uid in (0, self.owner):
            return True
        if method.write or self.read_gid is None:
            return False
        return peer.gid == self.read_gid or _in_group(peer.uid, self.read_gid)

    def refusal(self, peer: Peer) -> str:
        """Why ``peer`` may not use the socket, and who may."""
        if self.read_gid is None:
            return f"uid {peer.uid} may not use this socket: no control_group is set, so only {_owners(self.owner)} may"
        who = f"only {_owners(self.owner)} and members of group '{self.control_group}' (who may read)"
        return f"uid {peer.uid} may not use this socket: {who}"

    async def _connection(self, stream: SocketStream) -> None:
        self.connections += 1
        peer: Peer | None = None
        try:
            async with stream:
                peer = peer_of(stream)
                await self._converse(stream, peer)
        except (_Closing, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
            pass
        except (Exception, SystemExit):
            self.restarts.count("connection")
            log.exception("control connection failed", peer_pid=peer.pid if peer else None, peer_uid=peer.uid if peer else None)
        finally:
            self.connections -= 1

    async def _converse(self, stream: SocketStream, peer: Peer) -> None:
        if peer.uid not in (0, self.owner) and (self.read_gid is None or not self.may(peer, Method(_noop))):
            await self._send(stream, {"id": None, "error": {"code": FORBIDDEN, "message": self.refusal(peer)}})
            return
        buffer = bytearray()
        while True:
            line = await self._read_line(stream, buffer)
            if not line.strip():
                continue
            if not await self._answer(stream, peer, line):
                return

    async def _read_line(self, stream: SocketStream, buffer: bytearray) -> bytes:
        """The next request line; ``_Closing`` when the peer goes, idles or dawdles.

        A connection may wait ``idle_timeout`` for its next request; once a request has
        begun, all of it must arrive within ``request_timeout``.
        """
        begun: float | None = anyio.current_time() if buffer else None
        while True:
            end = buffer.find(b"\n")
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                return line
            if len(buffer) > MAX_REQUEST_BYTES:
                await self._send(
                    stream, {"id": None, "error": {"code": BAD_REQUEST, "message": f"request longer than {MAX_REQUEST_BYTES} bytes"}}
                )
                raise _Closing
            if begun is None:
                deadline = anyio.current_time() + self.idle_timeout
            else:
                deadline = begun + self.request_timeout
            chunk = None
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                chunk = await stream.receive(65536)
            if chunk is None:
                if begun is not None:
                    message = f"request not complete within {self.request_timeout:g}s"
                    await self._send(stream, {"id": None, "error": {"code": BAD_REQUEST, "message": message}})
                raise _Closing
            if begun is None:
                begun = anyio.current_time()
            buffer.extend(chunk)

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
                async with contextlib.aclosing(result):  # type: ignore[type-var]
                    async for chunk in result:
                        if not await self._send(stream, {"id": request_id, "result": chunk, "more": True}):
                            return False
                return await self._send(stream, {"id": request_id, "result": None})
            return await self._send(stream, {"id": request_id, "result": result})
        except ControlError as err:
            return await self._send(stream, {"id": request_id, "error": {"code": err.code, "message": err.message}})
        except (Exception, SystemExit) as err:  # a plugin calling sys.exit() is an error answer too
            log.exception("control method failed", peer_pid=peer.pid, peer_uid=peer.uid)
            return await self._send(stream, {"id": request_id, "error": {"code": INTERNAL, "message": f"{type(err).__name__}: {err}"}})

    async def _send(self, stream: SocketStream, message: dict[str, Any]) -> bool:
        """Send one answer line; False when the peer is gone or does not read for ``idle_timeout``."""
        try:
            with anyio.fail_after(self.idle_timeout):
                await stream.send(encode(message))
        except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError):
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


def _owners(uid: int) -> str:
    if uid == 0:
        return "root"
    try:
        return f"user {pwd.getpwuid(uid).pw_name} and root"
    except KeyError:
        return f"uid {uid} and root"


def _in_group(uid: int, gid: int) -> bool:
    try:
        user = pwd.getpwuid(uid).pw_name
        return user in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False
