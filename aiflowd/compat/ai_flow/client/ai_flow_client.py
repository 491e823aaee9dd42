"""``ai_flow.client.ai_flow_client.get_ai_flow_client``: AIFlow's client of its server.

AIFlow's client is also a notification client (demos call
``af.get_ai_flow_client().send_event(...)``); here it is exactly that. Its metadata
calls (datasets, models) are out of aiflowd's scope.
"""

from __future__ import annotations

from ai_flow.client.notification_client import get_notification_client
from notification_service.client import NotificationClient

__all__ = ["get_ai_flow_client"]


def get_ai_flow_client() -> NotificationClient:
    """The notification client: sends and lists events through the daemon."""
    return get_notification_client()
