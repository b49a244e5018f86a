"""Errors whose message is the whole story for the user (printed without a traceback), and how a command
reports them."""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """Bad input, missing data or an impossible request: the CLI prints it and exits 1."""

    kind = "error"  # the word before the message: "waveforms train: error: ..."
    exit_code = 1


def reported(prog: str, command: Callable[[], int | None]) -> int:
    """``command()``'s exit code; a :class:`UserError` is one line on stderr and its exit code; Ctrl-C is 130."""
    try:
        return int(command() or 0)
    except UserError as exc:
        print(f"{prog}: {exc.kind}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
