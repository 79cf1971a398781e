"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


class UserError(ValueError):
    """Bad input: the message names the problem and how to fix it, in one line."""
