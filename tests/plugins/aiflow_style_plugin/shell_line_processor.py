from typing import Text


class ShellLineProcessor(object):
    """One shell command line, run by the ``shell_line`` job type."""

    def __init__(self, command: Text) -> None:
        self.command = command
