"""S3 calls that survive a flaky network: bounded retries around the whole call, body included.

botocore retries a request whose answer is an error status or a failed connection, but
not a body that breaks after the call has returned (``StreamingBody.read`` raises
``IncompleteReadError`` or ``ResponseStreamingError``, outside its retry loop), and a
connection closed during a PUT's ``Expect: 100-continue`` exchange makes its
``AWSConnection._consume_headers`` read EOF forever at full CPU (boto/botocore#3613,
#3755; the header is not signed). So every client :func:`configure` sets up has bounded
connect and read timeouts, botocore's ``standard`` retries, and no ``Expect`` header; and
:func:`call` runs a whole S3 operation (request and body read) again after a transient
fault, with capped exponential backoff, up to :data:`ATTEMPTS` times. A persistent
fault is a :class:`StorageError` naming the object and the attempts; an answer such as
NoSuchKey or AccessDenied is not a fault of the network and is raised at once.
"""
from __future__ import annotations

import http.client
import logging
import random
import time
from typing import Any, Callable, TypeVar

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
    return isinstance(exc, (bex.ConnectionError, bex.ResponseStreamingError, bex.IncompleteReadError,
                            bex.ReadTimeoutError, bex.FlexibleChecksumError, uex.ProtocolError, uex.ReadTimeoutError, uex.IncompleteRead,
                            http.client.IncompleteRead, ConnectionError, TimeoutError))


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): capped exponential, half of it jitter."""
    full = min(BACKOFF_CAP_S, BACKOFF_S * 2 ** (attempt - 1))
    return full * (0.5 + 0.5 * (rng or random).random())


def call(what: str, operation: Callable[[], T], attempts: int = ATTEMPTS,
         sleep: Callable[[float], Any] = time.sleep) -> T:
    """``operation()``, run again after each transient fault, at most ``attempts`` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except Exception as exc:
            if not transient(exc):
                raise
            if attempt == attempts:
                raise StorageError(f"{what}: {attempts} attempts failed with network faults; the last: "
                                   f"{type(exc).__name__}: {exc}") from exc
            wait = backoff(attempt)
            log.warning("%s: %s (attempt %d of %d); retrying in %.1f s", what, type(exc).__name__, attempt,
                        attempts, wait)
            sleep(wait)
    raise AssertionError("unreachable")
