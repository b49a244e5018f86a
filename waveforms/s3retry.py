"""S3 calls that survive a flaky network: bounded retries around the whole call, body included.

botocore retries a request whose answer is an error status or a failed connection, but
not a body that breaks after the call has returned (``StreamingBody.read`` raises
``IncompleteReadError`` or ``ResponseStreamingError``, outside its retry loop), and a
connection closed during a PUT's ``Expect: 100-continue`` exchange makes its
``AWSConnection._consume_headers`` read EOF forever at full CPU (boto/botocore#3613,
#3755; the header is not signed). So every client :func:`configure` sets up has bounded
connect and read timeouts, botocore's ``standard`` retries, and no ``Expect`` header; and
:func:`call` runs a whole S3 operation (request and body read) again after a transient
fault, with capped exponential backoff: at least :data:`ATTEMPTS` times, and while the outage
it belongs to has lasted less than a bound in time (:data:`OUTAGE_S`, a stage's ``s3_outage_s``;
:func:`bounded`). An outage (an operation failing twice in a row) is logged once when it starts
and once when it ends, whatever the number of threads it stalls. A persistent
fault is a :class:`StorageError` naming the object and the attempts; an answer such as
NoSuchKey or AccessDenied is not a fault of the network and is raised at once.
"""
from __future__ import annotations

import contextlib
import http.client
import itertools
import logging
import random
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

from waveforms.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS = 6  # whole operations; each may make botocore's own BOTOCORE_ATTEMPTS requests
BOTOCORE_ATTEMPTS = 3
BACKOFF_S = 0.25  # the first wait; doubled each time, with jitter, up to BACKOFF_CAP_S
BACKOFF_CAP_S = 8.0
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60  # per socket read: a stalled connection fails within this and is retried
TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                             "RequestTimeTooSkewed", "500", "502", "503", "504"})


OUTAGE_S = 600.0
"""Seconds an operation that keeps failing with network faults is retried (the stages' ``s3_outage_s`` default):
outages of S3 or the path to it (a NAT gateway replaced, a throttling storm) last minutes; a stage that waits
10 minutes survives them, and a dead endpoint or lost credentials stop it within a 12-hour run's 1.4 %."""
OUTAGE_KEY = "s3_outage_s"


def outage_bound() -> float:
    """The seconds an outage is retried in this process: the innermost :func:`bounded`'s, else the default."""
    return OUTAGE_S


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """Inside: S3 outages are retried for ``seconds`` (a stage's ``s3_outage_s``), by every thread of the
    process (the feed's and the shard cache's too), and an outage left from before is forgotten."""
    global OUTAGE_S
    saved, OUTAGE_S = OUTAGE_S, float(seconds)
    OUTAGE.forget()
    try:
        yield
    finally:
        OUTAGE_S = saved
        OUTAGE.forget()


def duration(seconds: float) -> str:
    """``125.2`` -> ``"2 min 5 s"``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _clock_time(monotonic_s: float, clock: Callable[[], float]) -> str:
    """The wall-clock time (HH:MM:SS, local) of a moment given on ``clock``."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() - (clock() - monotonic_s)))


class Outage:
    """This process's S3 outage, if any: one operation failed twice in a row (a single cut is not an outage).
    Every thread's operations share it: it is announced once, with the time it began and the time retries
    stop, and its end once, by the first operation that succeeds after it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None  # on the callers' clock: the first fault of the operation that began it

    @property
    def announced(self) -> bool:
        return self.since is not None

    def fault(self, what: str, exc: BaseException, attempt: int, first: float, clock: Callable[[], float]) -> float:
        """Note a fault of an operation whose faults began at ``first``; the deadline of its retries."""
        with self._lock:
            if self.since is None and attempt >= 2:
                self.since = first
                log.warning("S3 unreachable since %s, retrying until %s (%s = %g; %s: %s)", _clock_time(first, clock),
                            _clock_time(first + outage_bound(), clock), OUTAGE_KEY, outage_bound(), what,
                            type(exc).__name__)
            return (first if self.since is None else min(self.since, first)) + outage_bound()

    def forget(self) -> None:
        with self._lock:
            self.since = None

    def start(self, first: float) -> float:
        """When the outage an operation's faults (since ``first``) belong to began."""
        since = self.since
        return first if since is None else min(since, first)

    def over(self, what: str, clock: Callable[[], float]) -> None:
        """An operation succeeded: end the outage, if one was announced."""
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            lasted, self.since = clock() - self.since, None
        log.warning("S3 answers again, after %s unreachable (%s)", duration(lasted), what)


OUTAGE = Outage()


class StorageError(UserError):
    """An S3 operation that kept failing with network faults after every retry."""


def client_config(max_pool_connections: int | None = None):
    """botocore's Config for every waveforms S3 client: timeouts, standard retries, the pool size."""
    from botocore.config import Config

    extra = {"max_pool_connections": max_pool_connections} if max_pool_connections else {}
    return Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, tcp_keepalive=True,
                  retries={"mode": "standard", "max_attempts": BOTOCORE_ATTEMPTS}, **extra)


def configure(client):
    """``client`` without botocore's ``Expect: 100-continue`` on uploads, and with every answer checked for
    whole headers (:func:`check_headers`); returns it."""
    from botocore.handlers import add_expect_header

    client.meta.events.unregister("before-call.s3", add_expect_header)
    client.meta.events.register("after-call.s3", check_headers)
    return client


def check_headers(http_response=None, **_) -> None:
    """Raise a transient fault for an answer whose headers were cut off: every S3 answer but a 204 or 304
    says how long its body is, so one without Content-Length or Transfer-Encoding lost its last headers
    (botocore would parse its empty body as an empty listing or a bare success)."""
    if http_response is None or http_response.status_code in (204, 304):
        return
    headers = {k.lower() for k in http_response.headers}
    if not headers & {"content-length", "transfer-encoding"}:
        raise http.client.IncompleteRead(b"", None)


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a network fault worth another try (not an answer about the object). A body whose
    checksum does not match the one S3 sent with it was damaged in transit: another GET is the cure."""
    from botocore import exceptions as bex
    from urllib3 import exceptions as uex

    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {}) if exc.response else {}
        status = (exc.response or {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.get("Code") in TRANSIENT_CODES or status >= 500
    return isinstance(exc, (bex.ConnectionError, bex.ConnectionClosedError, bex.ResponseStreamingError,
                            bex.IncompleteReadError, bex.ReadTimeoutError, bex.FlexibleChecksumError, uex.ProtocolError, uex.ReadTimeoutError, uex.IncompleteRead,
                            http.client.IncompleteRead, ConnectionError, TimeoutError))


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): capped exponential, half of it jitter."""
    full = min(BACKOFF_CAP_S, BACKOFF_S * 2 ** (attempt - 1))
    return full * (0.5 + 0.5 * (rng or random).random())


def call(what: str, operation: Callable[[], T], attempts: int = ATTEMPTS,
         sleep: Callable[[float], Any] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T:
    """``operation()``, run again after each transient fault: at least ``attempts`` times in all, and for as
    long as the outage it belongs to has lasted less than :func:`outage_bound` seconds (``clock``: monotonic
    seconds; ``sleep`` and ``clock`` are injected by tests)."""
    first: float | None = None
    for attempt in itertools.count(1):
        try:
            result = operation()
        except Exception as exc:
            if not transient(exc):
                raise
            now = clock()
            first = now if first is None else first
            deadline = OUTAGE.fault(what, exc, attempt, first, clock)
            if attempt >= attempts and now >= deadline:
                raise StorageError(_gave_up(what, attempt, exc, now - OUTAGE.start(first))) from exc
            wait = backoff(attempt) if attempt < attempts else min(backoff(attempt), deadline - now)
            _retrying(what, exc, attempt, wait)
            sleep(wait)
        else:
            OUTAGE.over(what, clock)
            return result
    raise AssertionError("unreachable")


def _retrying(what: str, exc: BaseException, attempt: int, wait: float) -> None:
    """The log line of one retried fault (a debug line while an outage has been announced: it said it once)."""
    level = logging.DEBUG if OUTAGE.announced else logging.WARNING
    log.log(level, "%s: %s (attempt %d); retrying in %.1f s", what, type(exc).__name__, attempt, wait)


def _gave_up(what: str, attempt: int, exc: BaseException, lasted: float) -> str:
    text = f"{what}: {attempt} attempts failed with network faults; the last: {type(exc).__name__}: {exc}".rstrip(".")
    bound = outage_bound()
    if bound > 0:
        text += (f". S3 was unreachable for {duration(lasted)}, longer than {OUTAGE_KEY} = {bound:g} s allows; "
                 "rerun the stage when S3 answers again")
    return text
