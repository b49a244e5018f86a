"""Errors whose message is the whole story for the user (printed without a traceback)."""


class UserError(Exception):
    """Bad input, missing data or an impossible request: the CLI prints it and exits 1."""
