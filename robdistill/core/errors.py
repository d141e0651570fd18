"""Errors meant for the user: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """Bad input (a name, a value, a file) with a message that says how to fix it."""
