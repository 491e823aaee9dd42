"""The processor of event_demo's 'train' job: it sends an event to the daemon running it."""

import os

from aiflowd import PythonProcessor
from aiflowd.client import Client


class SendEvent(PythonProcessor):
    """Sends the event ``key`` = ``value``; every open execution's rules see it.

    AIFlow's way works too: ``af.get_notification_client().send_event(BaseEvent(key, value))``.
    """

    def __init__(self, key: str, value: str) -> None:
        self.key = key
        self.value = value

    def process(self, execution_context, input_list):
        print(f"trained {self.value}")
        if "AIFLOWD_SOCKET" not in os.environ:  # aiflowd run-once: no daemon listens for events
            print(f"no daemon to send {self.key}={self.value} to: 'deploy' starts only when a daemon runs this workflow")
            return []
        Client().send_event(self.key, self.value)  # its sender is this job, 'train'
        print(f"sent {self.key}={self.value}")
        return []
