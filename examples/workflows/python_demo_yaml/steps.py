"""Processors of the python_demo_yaml workflow."""

import os

from aiflowd import PythonProcessor


class PrintGreeting(PythonProcessor):
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    def process(self, execution_context, input_list):
        print(f"{self.greeting}{os.environ.get('GREETING_SUFFIX', '')} from {execution_context.name}")
        return []
