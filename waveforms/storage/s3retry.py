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

A connection can also close inside an answer's header block. ``http.client`` takes end-of-file as the end
of the headers, so such an answer reached botocore looking whole, with its last header cut short: a
``Last-Modified`` of ``Sun, 06 De`` made botocore's parser raise ``ValueError`` outside its retry loop, an
empty ``Content-Length`` did the same, a late one cut short was read as a shorter length, a cut date
ending ``GM`` parsed as a wrong time, and urllib3 logged a ``HeaderParsingError`` traceback for some of
them. Cut at each of its bytes (``test/test_s3_cut_matrix.py``), 12 of the 490 header bytes of a HEAD's
answer (and 12 of the 522 of a GET's) escaped as ``ValueError``. No botocore event comes between the
reading of the headers and their parsing with the raw answer at hand, so :func:`configure` installs a
response class on botocore's HTTP connections (``response_class``, the hook urllib3's
``HTTPConnection.getresponse`` documents) whose ``begin`` refuses a header block that did not end with
its blank line (:class:`HeadersCut`, a connection reset): urllib3 and botocore see a dropped connection,
which botocore's own retries and then :func:`call` retry, before anything parses the headers. botocore
also reads a body it parses (all but GetObject's stream) with urllib3's length check off, so a body cut
short parsed as a shorter document (an empty listing; a CreateMultipartUpload without its UploadId):
:func:`check_headers`, a ``before-parse`` listener, refuses it.

Faults that a retry absorbed are quiet: one line each at most (no traceback; the full record at debug
level, for ``-v`` and ``--log-file``), counted, and summed up once at the end of a stage
(:func:`fault_summary`). The retries' jitter comes from a generator of this module's own, never from
Python's global ``random``, whose state seeds Keras's initialisers (botocore's own jitter does draw from
it: code that must compute the same whatever the network did seeds right before it draws).
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

from waveforms.runtime.errors import UserError

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
10 minutes survives them, and a dead endpoint stops it after 1.4 % of a 12-hour run instead of hanging. (An
answer such as AccessDenied is no network fault: it stops a stage at once.)"""
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
    """``client`` without botocore's ``Expect: 100-continue`` on uploads, with every answer's header block
    required whole (:class:`WholeHeadersResponse`) and its body as long as it says (:func:`check_headers`)
    before anything parses them, and the faults botocore retries itself counted; returns it."""
    from botocore.handlers import add_expect_header

    _install_whole_headers()
    client.meta.events.unregister("before-call.s3", add_expect_header)
    client.meta.events.register("before-parse.s3", check_headers)
    client.meta.events.register("needs-retry.s3", _botocore_retry)
    return client


def check_headers(response_dict=None, operation_model=None, **_) -> None:
    """``before-parse`` listener: refuse, as a transient fault, an answer that is not whole. Every S3 answer
    but a 204 or 304 says how long its body is, so one without Content-Length or Transfer-Encoding lost
    headers; and a body read whole before parsing (all but GetObject's stream) must be that long: botocore
    reads it with urllib3's length check off, so a body cut at any byte used to parse as a shorter document
    (an empty one: a CreateMultipartUpload without its UploadId, a listing without its keys)."""
    if response_dict is None or response_dict.get("status_code") in (204, 304):
        return
    headers = {k.lower(): v for k, v in (response_dict.get("headers") or {}).items()}
    if not {"content-length", "transfer-encoding"} & set(headers):
        raise http.client.IncompleteRead(b"", None)
    body = response_dict.get("body")
    head = operation_model is not None and operation_model.http.get("method") == "HEAD"
    if isinstance(body, bytes) and not head and "content-length" in headers:
        expected = int(headers["content-length"])
        if len(body) != expected:
            raise http.client.IncompleteRead(body, expected - len(body))


class HeadersCut(ConnectionResetError, http.client.HTTPException):
    """The connection closed inside an answer's status line or header block (before its blank line)."""


class WholeHeadersResponse(http.client.HTTPResponse):
    """An ``http.client`` answer whose header block must end with its blank line, else :class:`HeadersCut`.

    ``begin`` reads the status line and the headers with ``fp.readline`` and stops at the blank line or
    at end-of-file; the last line it read tells which. Only ``begin`` is watched: the body is read as
    ``http.client`` reads it."""

    def begin(self) -> None:
        if self.headers is not None:  # begun already
            return
        fp = self.fp
        self.fp = watched = _LastLine(fp)
        try:
            super().begin()
        finally:
            if self.fp is watched:  # not closed by begin (a bad status line closes it)
                self.fp = fp
        if watched.last not in (b"\r\n", b"\n"):
            raise HeadersCut("the connection closed inside the answer's headers")


class _LastLine:
    """A file object that remembers the last line read from it (everything else is the file's own)."""

    def __init__(self, fp) -> None:
        self._fp = fp
        self.last: bytes | None = None

    def readline(self, limit: int = -1) -> bytes:
        self.last = self._fp.readline(limit)
        return self.last

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


def _install_whole_headers() -> None:
    """Make botocore's HTTP(S) connections made from now on answer with :class:`WholeHeadersResponse`.
    (botocore sets its own response class only for an ``Expect: 100-continue`` exchange, which
    :func:`configure` turns off, and restores this one after it.)"""
    from botocore.awsrequest import AWSHTTPConnection, AWSHTTPSConnection

    for cls in (AWSHTTPConnection, AWSHTTPSConnection):
        if cls.response_class is not WholeHeadersResponse:
            cls.response_class = WholeHeadersResponse


class FaultCount:
    """This process's transient S3 faults, each counted once where it is retried (by botocore, or by
    :func:`call`), and the operations that gave up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults = self.gave_up = 0

    def note(self, gave_up: bool = False) -> None:
        with self._lock:
            self.faults += 1
            self.gave_up += gave_up

    def reset(self) -> None:
        with self._lock:
            self.faults = self.gave_up = 0


FAULTS = FaultCount()


def fault_summary() -> str | None:
    """One line on the transient S3 faults of this process so far (None when there were none)."""
    n, failed = FAULTS.faults, FAULTS.gave_up
    if not n:
        return None
    plural = "s" if n != 1 else ""
    if not failed:
        return f"S3: {n} transient fault{plural}, all retried"
    return f"S3: {n} transient fault{plural}; {failed} operation{'s' if failed != 1 else ''} gave up"


def report_faults() -> None:
    """Log :func:`fault_summary` (at info level), if there were faults."""
    summary = fault_summary()
    if summary:
        log.info("%s", summary)


def botocore_requests() -> int:
    """Requests botocore makes for one call at most: Config's ``retries["max_attempts"]`` counts the retries
    (botocore's ``total_max_attempts`` counts them all), so 1 + :data:`BOTOCORE_ATTEMPTS`."""
    return BOTOCORE_ATTEMPTS + 1


def _botocore_retry(attempts: int = 0, caught_exception: BaseException | None = None, response=None,
                    **_) -> None:
    """``needs-retry`` listener: count a fault botocore is about to retry itself (its last attempt's fault
    reaches :func:`call`, which counts it there); records the fault at debug level. Decides nothing."""
    if attempts >= botocore_requests():
        return None
    if caught_exception is not None:
        fault: Any = caught_exception
    else:
        status = (response[0].status_code if response and response[0] is not None else 0)
        code = (response[1] or {}).get("Error", {}).get("Code") if response else None
        if status < 500 and code not in TRANSIENT_CODES:
            return None
        fault = f"HTTP {status} {code or ''}".strip()
    FAULTS.note()
    log.debug("S3 request attempt %d: %s; botocore retries it", attempts,
              fault if isinstance(fault, str) else f"{type(fault).__name__}: {fault}",
              exc_info=fault if isinstance(fault, BaseException) else None)
    return None


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a network fault worth another try (not an answer about the object). A body whose
    checksum does not match the one S3 sent with it was damaged in transit: another GET is the cure.
    botocore's ``HTTPClientError`` (``ConnectionClosedError``, ...) reaches here when botocore stops retrying:
    at its last attempt, or when its retry quota is spent. boto3's transfers wrap the fault they failed on
    (``S3UploadFailedError``): its cause decides."""
    from boto3 import exceptions as b3ex
    from botocore import exceptions as bex
    from urllib3 import exceptions as uex

    if isinstance(exc, (b3ex.S3UploadFailedError, b3ex.S3TransferFailedError)):
        cause = exc.__cause__ or exc.__context__  # boto3 raises it inside ``except ClientError``, without ``from``
        return cause is not None and transient(cause)
    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {}) if exc.response else {}
        status = (exc.response or {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.get("Code") in TRANSIENT_CODES or status >= 500
    return isinstance(exc, (bex.ConnectionError, bex.HTTPClientError, bex.ResponseStreamingError,
                            bex.IncompleteReadError, bex.ReadTimeoutError, bex.FlexibleChecksumError,
                            uex.ProtocolError, uex.ReadTimeoutError, uex.IncompleteRead, http.client.IncompleteRead,
                            ConnectionError, TimeoutError))


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): capped exponential, half of it jitter."""
    full = min(BACKOFF_CAP_S, BACKOFF_S * 2 ** (attempt - 1))
    return full * (0.5 + 0.5 * (rng or _JITTER).random())


_JITTER = random.Random()  # not the global generator: a retry must not move the state Keras seeds from


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
    """The log line of one retried fault (a debug line while an outage has been announced: it said it once),
    without a traceback; the fault's whole record at debug level (``-v``, ``--log-file``). Counts it."""
    FAULTS.note()
    level = logging.DEBUG if OUTAGE.announced else logging.WARNING
    log.log(level, "%s: %s (attempt %d); retrying in %.1f s", what, type(exc).__name__, attempt, wait)
    log.debug("%s: the fault of attempt %d", what, attempt, exc_info=exc)


def _gave_up(what: str, attempt: int, exc: BaseException, lasted: float) -> str:
    FAULTS.note(gave_up=True)
    text = f"{what}: {attempt} attempts failed with network faults; the last: {type(exc).__name__}: {exc}".rstrip(".")
    bound = outage_bound()
    if bound > 0:
        text += (f". S3 was unreachable for {duration(lasted)}, longer than {OUTAGE_KEY} = {bound:g} s allows; "
                 "rerun the stage when S3 answers again")
    return text
