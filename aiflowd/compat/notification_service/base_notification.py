"""``notification_service.base_notification``: ``BaseEvent`` and the default type and namespace."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiflowd.model import DEFAULT_NAMESPACE

#: The type AIFlow gives an event sent without one (aiflowd stores it as ``*``: any type).
UNDEFINED_EVENT_TYPE = "UNDEFINED"
#: Matches any value of a field in AIFlow's listening calls.
ANY_CONDITION = "*"

__all__ = ["ANY_CONDITION", "DEFAULT_NAMESPACE", "UNDEFINED_EVENT_TYPE", "BaseEvent"]


@dataclass
class BaseEvent:
    """An event as AIFlow code builds it: ``BaseEvent(key, value, event_type=..., ...)``.

    ``version`` and ``create_time`` are filled in from the daemon's record when listed;
    ``context`` is kept by AIFlow for its context extractors, which aiflowd does not have:
    it is accepted and not sent.
    """

    key: str
    value: str
    event_type: str = UNDEFINED_EVENT_TYPE
    version: int | None = None
    create_time: int | None = None
    context: str | None = None
    namespace: str | None = None
    sender: str | None = None
    id: int | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: dict[str, object]) -> BaseEvent:
        """An event as the daemon lists it (its id is the version; time in milliseconds, as AIFlow's)."""
        event_type = str(row["event_type"])
        return cls(
            key=str(row["key"]),
            value=str(row["value"]),
            event_type=UNDEFINED_EVENT_TYPE if event_type == "*" else event_type,
            version=int(row["id"]),  # type: ignore[call-overload]
            create_time=int(float(row["time"]) * 1000),  # type: ignore[arg-type]
            namespace=str(row["namespace"]),
            sender=str(row["sender"]),
            id=int(row["id"]),  # type: ignore[call-overload]
        )

    def __post_init__(self) -> None:
        if self.create_time is None:
            self.create_time = int(time.time() * 1000)
