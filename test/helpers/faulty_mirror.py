"""The demo's FMA-format mirror with faults injected, for the scrape tests and benchmarks.

Faults (``mirror.faults``): ``once[key]`` is a queue of faults taken one per request
to ``key``; ``always[key]`` applies to every request. A key is the request path, plus
``?page=N`` for genre pages (see :meth:`Mirror.file_key` and :meth:`Mirror.page_key`).
Fault names: ``429``, ``503`` (with ``Retry-After``), ``500``, ``404``, ``reset``
(TCP reset), ``truncate`` (half the body, then close), ``slow`` (body trickles),
``stall`` (sleep before answering), ``html-type`` (``text/html``), ``not-mp3`` (an
HTML body as audio/mpeg), ``malformed`` (a page without play-items), ``bad-json``
(play-items whose JSON is broken). Each request's log entry records its ``fault``.
"""
from __future__ import annotations

import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from waveforms.demo.markup import page_html
from waveforms.demo.mirror import Handler, Mirror


@dataclass
class Faults:
    once: dict[str, list[str]] = field(default_factory=dict)
    always: dict[str, str] = field(default_factory=dict)
    retry_after: int = 1
    slow_delay_s: float = 0.2  # per 8 KiB chunk
    stall_s: float = 2.0
    robots_status: int = 200
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, key: str) -> str | None:
        with self._lock:
            queue = self.once.get(key)
            if queue:
                return queue.pop(0)
            return self.always.get(key)


class FaultyHandler(Handler):
    """The mirror's answers, with the fault its :class:`Faults` holds for the request's key."""

    fault: str | None = None

    def route(self, path: str, query: dict, page: int, entry: dict[str, Any]) -> None:
        faults: Faults = self.mirror.faults  # type: ignore[attr-defined]
        self.fault = entry["fault"] = faults.take(entry["key"])
        # status-only faults apply to every route
        if self.fault == "stall":
            time.sleep(faults.stall_s)
        if self.fault in ("429", "503"):
            return self.send(int(self.fault), b"busy", "text/plain", {"Retry-After": str(faults.retry_after)})
        if self.fault in ("500", "404"):
            return self.send(int(self.fault), page_html("Error", "<h1>Error</h1>").encode(), "text/html")
        if self.fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return None
        if path == "/robots.txt" and faults.robots_status != 200:
            return self.send(faults.robots_status, b"", "text/plain")
        return super().route(path, query, page, entry)

    def genre(self, genre: str, query: dict, page: int) -> None:
        if genre in self.mirror.listings and self.fault == "malformed":
            text = "<html><body><h1>Oops</h1><div class=\"play-list\"><div class="
            return self.send(200, text.encode(), "text/html; charset=UTF-8")
        return super().genre(genre, query, page)

    def send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        if self.fault == "bad-json" and ctype.startswith("text/html"):  # every play-item's JSON cut short
            body = re.sub(rb"(tid-(\d+)\" )data-track-info=('[^']*'|\"[^\"]*\")",
                          rb"\1data-track-info='{\"id\":\2,\"title\":\"cut'", body)
        super().send(status, body, ctype, headers)

    def send_body(self, data: bytes, ctype: str) -> None:
        if self.fault == "html-type":
            ctype = "text/html; charset=UTF-8"
        if self.fault == "not-mp3":
            data = page_html("Download", "<p>Please log in to download</p>").encode()
        super().send_body(data, ctype)

    def write_body(self, data: bytes) -> None:
        if self.fault == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.fault == "slow":
            for i in range(0, len(data), 8192):
                self.wfile.write(data[i : i + 8192])
                self.wfile.flush()
                time.sleep(self.mirror.faults.slow_delay_s)  # type: ignore[attr-defined]
            return
        super().write_body(data)


class FaultyMirror(Mirror):
    """A :class:`Mirror` whose answers carry the faults in :attr:`faults`."""

    handler = FaultyHandler

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults = Faults()
