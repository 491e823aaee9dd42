"""The control protocol: newline-delimited JSON over a Unix stream socket, one request per line.

Request ``{"id": 1, "method": "job.stop", "params": {...}}``; answer ``{"id": 1, "result": ...}``
or ``{"id": 1, "error": {"code": ..., "message": ...}}``. A streaming answer (logs and
events with ``follow``) is several lines with ``"more": true``, the last one without.
"""

from __future__ import annotations

import json
from typing import Any

MAX_REQUEST_BYTES = 64 * 1024

# Error codes, as a client sees them.
BAD_REQUEST = "bad_request"
UNKNOWN_METHOD = "unknown_method"
FORBIDDEN = "forbidden"
REFUSED = "refused"
INTERNAL = "internal"


class ControlError(Exception):
    """A request the daemon answers with an error (never a crash)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def parse_request(line: bytes) -> tuple[Any, str, dict[str, Any]]:
    """(id, method, params) of one request line; ControlError(BAD_REQUEST) when malformed."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as err:
        raise ControlError(BAD_REQUEST, f"not JSON: {err}") from err
    if not isinstance(request, dict):
        raise ControlError(BAD_REQUEST, "a request is a JSON object")
    method, params = request.get("method"), request.get("params", {})
    if not isinstance(method, str) or not method:
        raise ControlError(BAD_REQUEST, "'method' must be a non-empty string")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ControlError(BAD_REQUEST, "'params' must be an object")
    return request.get("id"), method, params
