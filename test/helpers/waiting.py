"""Waiting in tests: poll a condition until it holds, with a bound on the wait and an early end."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, *, every: float = 0.3,
             alive: Callable[[], bool] | None = None, detail: Callable[[], str] | None = None) -> T:
    """Call ``predicate`` every ``every`` seconds until it returns something true, and return that.

    Fails with an AssertionError naming ``what`` after ``timeout`` seconds, or as soon as ``alive()`` is
    false (the process being watched has ended first); ``detail()``, e.g. a log's tail, ends the message.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        why = ("it ended first" if alive is not None and not alive()
               else f"not within {timeout:.0f} s" if time.monotonic() >= deadline else "")
        if why:
            raise AssertionError(f"waiting for {what}: {why}" + (f"\n{detail()}" if detail else ""))
        time.sleep(every)
