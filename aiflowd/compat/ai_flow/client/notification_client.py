"""``ai_flow.client.notification_client.get_notification_client``: events from inside a job.

The client sends as the job it runs in (its sender is ``$AIFLOWD_JOB``) to the daemon
that runs the job (``$AIFLOWD_SOCKET``, which the daemon gives every job).
"""

from __future__ import annotations

from ai_flow.context.job_context import current_job_name
from notification_service.client import NotificationClient

__all__ = ["NotificationClient", "get_notification_client"]

_client: NotificationClient | None = None


def get_notification_client() -> NotificationClient:
    """The process's notification client, made on first use."""
    global _client
    if _client is None:
        _client = NotificationClient(sender=current_job_name())
    return _client
