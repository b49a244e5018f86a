"""Streaming MP3 download to a temporary file, checked before it may take a final name.

Checks: HTTP status, an audio content type, ``Content-Length`` against the size cap
and against the bytes received, the MP3 magic (an ID3 tag or an MPEG frame sync).
A cut body or a connection dropped mid-body is retried with the same urllib3
``Retry`` policy (backoff with jitter, capped attempts) as every other request.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import requests
from urllib3.exceptions import MaxRetryError, ProtocolError

from waveforms.scrape.http import FetchError, Http

CHUNK = 16 * 1024  # small enough that a trickling body still reaches the disk
AUDIO_TYPES = ("application/octet-stream", "binary/octet-stream", "application/x-mpeg")


def is_audio_type(content_type: str) -> bool:
    ctype = content_type.split(";")[0].strip().lower()
    return ctype.startswith("audio/") or ctype in AUDIO_TYPES


def id3_size(head: bytes) -> int:
    """Bytes taken by a leading ID3v2 tag (0 if none)."""
    if len(head) < 10 or head[:3] != b"ID3":
        return 0
    size = 0
    for b in head[6:10]:
        size = (size << 7) | (b & 0x7F)
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def is_frame_sync(data: bytes, i: int = 0) -> bool:
    """An MPEG audio frame header at ``i``: 11 sync bits, valid version, layer, bitrate, rate."""
    if i + 4 > len(data) or data[i] != 0xFF or data[i + 1] & 0xE0 != 0xE0:
        return False
    version = (data[i + 1] >> 3) & 3
    layer = (data[i + 1] >> 1) & 3
    bitrate = data[i + 2] >> 4
    rate = (data[i + 2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def looks_like_mp3(head: bytes) -> bool:
    """The start of an MP3 file: an ID3v2 tag or an MPEG frame header."""
    return head[:3] == b"ID3" or is_frame_sync(head)


def has_mp3_audio(data: bytes) -> bool:
    """True if ``data`` (a whole file or a large head of one) holds at least one MPEG frame."""
    start = id3_size(data)
    return any(is_frame_sync(data, i) for i in range(start, min(len(data) - 3, start + 65536)))


@dataclass
class Downloaded:
    path: Path
    size: int
    sha256: str


class _Transient(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _attempt(http: Http, url: str, tmp: Path, max_bytes: int) -> Downloaded:
    resp = http.get(url, stream=True)
    with resp:
        ctype = resp.headers.get("Content-Type", "")
        if not is_audio_type(ctype):
            raise FetchError("content-type", f"not audio: {ctype or 'no Content-Type'}", url)
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if expected is not None and expected > max_bytes:
            raise FetchError("too-large", f"{expected} bytes > cap {max_bytes}", url)
        h = hashlib.sha256()
        n = 0
        with open(tmp, "wb") as fh:
            try:
                for chunk in resp.iter_content(CHUNK):
                    if n == 0 and not looks_like_mp3(chunk):
                        raise FetchError("not-mp3", "body does not start like an MP3", url)
                    n += len(chunk)
                    if n > max_bytes:
                        raise FetchError("too-large", f"body exceeds cap {max_bytes}", url)
                    h.update(chunk)
                    fh.write(chunk)
            except requests.exceptions.ChunkedEncodingError as exc:
                raise _Transient("truncated", str(exc)) from exc
            except requests.exceptions.Timeout as exc:
                raise _Transient("timeout", str(exc)) from exc
            except requests.exceptions.ConnectionError as exc:
                raise _Transient("connection", str(exc)) from exc
            fh.flush()
            os.fsync(fh.fileno())
    if n == 0:
        raise FetchError("empty", "empty body", url)
    if expected is not None and n != expected and not resp.headers.get("Content-Encoding"):
        raise _Transient("truncated", f"{n} of {expected} bytes")
    return Downloaded(tmp, n, h.hexdigest())


def download(http: Http, url: str, tmp: Path, max_bytes: int) -> Downloaded:
    """Fetch ``url`` into ``tmp``; raise ``FetchError`` (and remove ``tmp``) on failure."""
    retry = http.new_retry()
    try:
        while True:
            try:
                return _attempt(http, url, tmp, max_bytes)
            except _Transient as exc:
                try:
                    retry = retry.increment(method="GET", url=url, error=ProtocolError(str(exc)))
                except MaxRetryError:
                    raise FetchError(exc.reason, f"{exc.detail} (retries exhausted)", url) from exc
                retry.sleep()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
