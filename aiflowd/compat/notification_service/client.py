"""``notification_service.client.NotificationClient``: send and list events through the daemon.

``server_uri`` is accepted and ignored: events go to the aiflowd found as
``aiflowd.client`` finds it (``$AIFLOWD_SOCKET`` inside a job). Listening for events
(``start_listen_event``) is not offered: a workflow reacts to events with rules.
"""

from __future__ import annotations

from typing import Any

from notification_service.base_notification import UNDEFINED_EVENT_TYPE, BaseEvent

from aiflowd.client import Client
from aiflowd.model import ANY, DEFAULT_NAMESPACE

__all__ = ["NotificationClient"]


class NotificationClient:
    """AIFlow's notification client over aiflowd's control socket."""

    def __init__(
        self,
        server_uri: str | None = None,
        default_namespace: str | None = None,
        sender: str | None = None,
        *,
        socket: str | None = None,
        **ignored: Any,
    ) -> None:
        self.server_uri = server_uri
        self.default_namespace = default_namespace or DEFAULT_NAMESPACE
        self.sender = sender
        self.client = Client(socket)

    def send_event(self, event: BaseEvent) -> BaseEvent:
        """Send ``event``: every open execution's rules and every workflow's triggers see it."""
        event_type = ANY if event.event_type in (None, UNDEFINED_EVENT_TYPE) else str(event.event_type)
        namespace = event.namespace or self.default_namespace
        self.client.send_event(str(event.key), str(event.value), event_type, namespace, event.sender or self.sender)
        event.namespace = namespace
        return event

    def list_events(
        self,
        key: str | list[str],
        namespace: str | None = None,
        version: int | None = None,
        event_type: str | None = None,
        start_time: int | None = None,
        sender: str | None = None,
        limit: int = 1000,
    ) -> list[BaseEvent]:
        """The events of ``key`` (or keys) after ``version`` (an event's id), oldest first, at most ``limit``."""
        keys = {key} if isinstance(key, str) else set(key)
        return [
            e
            for e in self.list_all_events(start_version=version, start_time=start_time, limit=limit)
            if e.key in keys
            and (namespace in (None, ANY) or e.namespace == namespace)
            and (event_type in (None, ANY) or e.event_type == event_type)
            and (sender in (None, ANY) or e.sender == sender)
        ]

    def list_all_events(
        self, start_time: int | None = None, start_version: int | None = None, end_version: int | None = None, limit: int = 1000
    ) -> list[BaseEvent]:
        """Events after ``start_version`` (or the latest ``limit``), oldest first; ``start_time`` in ms."""
        rows = self.client.list_events(after=start_version, limit=limit)
        events = [BaseEvent.from_row(row) for row in rows]
        if start_time is not None:
            events = [e for e in events if (e.create_time or 0) >= start_time]
        if end_version is not None:
            events = [e for e in events if (e.version or 0) <= end_version]
        return events

    def get_latest_version(self, key: str, namespace: str | None = None) -> int:
        """The id of the latest event of ``key`` (0 when there is none)."""
        events = self.list_events(key, namespace=namespace)
        return events[-1].version or 0 if events else 0
