"""A small FMA-format HTTP server on 127.0.0.1: genre pages, track pages, MP3s, archives.

It serves the same markup the scraper reads on freemusicarchive.org (``div.play-item``
with ``data-track-info`` JSON, ``a.pagination-next``, ``div.pagination-full``, track
pages with ``a[rel=license]``), a robots.txt, ``/files/<name>.mp3`` and ``/fma/<name>.zip``
(both with HTTP Range), and can inject faults for tests. ``make demo`` runs it over
Debian's hyperrogue-music (see :mod:`waveforms.demo.music`); the markup is
in :mod:`waveforms.demo.markup`.

Faults (``mirror.faults``): ``once[key]`` is a queue of faults taken one per request
to ``key``; ``always[key]`` applies to every request. A key is the request path, plus
``?page=N`` for genre pages (see :meth:`Mirror.file_key` and :meth:`Mirror.page_key`).
Fault names: ``429``, ``503`` (with ``Retry-After``), ``500``, ``404``, ``reset``
(TCP reset), ``truncate`` (half the body, then close), ``slow`` (body trickles),
``stall`` (sleep before answering), ``html-type`` (``text/html``), ``not-mp3`` (an
HTML body as audio/mpeg), ``malformed`` (a page without play-items), ``bad-json``
(play-items whose JSON is broken).
"""
from __future__ import annotations

import hashlib
import logging
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from waveforms.demo.markup import genre_page_html, page_html, robots_txt, slug, track_page_html

log = logging.getLogger(__name__)

CC_BY_SA_3 = "https://creativecommons.org/licenses/by-sa/3.0/"


@dataclass
class MirrorTrack:
    """One track the mirror lists; ``handle`` is page text only (it may be hostile)."""

    id: int
    title: str
    artist: str
    mp3: Path
    genres: list[str]
    album: str = "-"
    licence: str | None = CC_BY_SA_3
    handle: str = ""
    file_name: str = ""

    def __post_init__(self) -> None:
        self.handle = self.handle or slug(self.title)
        if not self.file_name:
            token = hashlib.sha1(f"{self.id}:{self.title}".encode()).hexdigest()[:24]
            self.file_name = f"{token}.mp3"


@dataclass
class Faults:
    once: dict[str, list[str]] = field(default_factory=dict)
    always: dict[str, str] = field(default_factory=dict)
    retry_after: int = 1
    slow_delay_s: float = 0.2  # per 8 KiB chunk
    stall_s: float = 2.0
    robots_status: int = 200
    robots_disallow: list[str] = field(default_factory=list)
    content_signal: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, key: str) -> str | None:
        with self._lock:
            queue = self.once.get(key)
            if queue:
                return queue.pop(0)
            return self.always.get(key)


class Mirror:
    """The server; use as a context manager or ``start()``/``stop()``."""

    def __init__(
        self,
        tracks: list[MirrorTrack],
        archives: dict[str, Path] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.tracks = {t.id: t for t in tracks}
        self.listings: dict[str, list[int]] = {}
        for t in tracks:
            for g in t.genres:
                self.listings.setdefault(g, []).append(t.id)
        self.archives = dict(archives or {})
        self.faults = Faults()
        self.log: list[dict] = []
        self._log_lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._bytes: dict[int, bytes] = {}

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- URLs and fault keys -------------------------------------------------
    def page_key(self, genre: str, page: int) -> str:
        return f"/genre/{quote(genre, safe='')}?page={page}"

    def file_key(self, track_id: int) -> str:
        return f"/files/{self.tracks[track_id].file_name}"

    def track_page_path(self, t: MirrorTrack) -> str:
        return f"/music/{slug(t.artist)}/single/{quote(t.handle, safe='')}/"

    def track_info(self, t: MirrorTrack) -> dict:
        base = self.url
        return {
            "id": t.id,
            "handle": t.handle,
            "url": base + self.track_page_path(t),
            "title": t.title,
            "artistName": t.artist,
            "artistUrl": f"{base}/music/{slug(t.artist)}/",
            "albumTitle": t.album,
            "playbackUrl": f"{base}/track/{quote(t.handle, safe='')}/stream/",
            "downloadUrl": f"{base}/track/{quote(t.handle, safe='')}/download/",
            "fileName": t.file_name,
            "fileUrl": f"{base}/files/{t.file_name}",
        }

    def requests_for(self, path_prefix: str) -> list[dict]:
        with self._log_lock:
            return [r for r in self.log if r["path"].startswith(path_prefix)]

    def audio(self, t: MirrorTrack) -> bytes:
        if t.id not in self._bytes:
            self._bytes[t.id] = Path(t.mp3).read_bytes()
        return self._bytes[t.id]

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "Mirror":
        self._thread = threading.Thread(target=self._server.serve_forever, name="mirror", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "Mirror":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- request handling ------------------------------------------------------------
def _handler_for(m: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fma-mirror/1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            log.debug("%s " + format, self.client_address[0], *args)

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            path = parts.path
            page = int(query.get("page", ["1"])[0] or 1) if path.startswith("/genre/") else 0
            key = f"{path}?page={page}" if page else path
            fault = m.faults.take(key)
            with m._log_lock:
                m.log.append({"path": path, "key": key, "query": parts.query, "fault": fault,
                              "range": self.headers.get("Range"), "ua": self.headers.get("User-Agent"),
                              "time": time.monotonic()})
            try:
                self.route(path, query, page, fault)
            except (BrokenPipeError, ConnectionResetError):
                pass

        # status-only faults apply to every route
        def route(self, path: str, query: dict, page: int, fault: str | None) -> None:
            if fault == "stall":
                time.sleep(m.faults.stall_s)
            if fault in ("429", "503"):
                return self.send(int(fault), b"busy", "text/plain", {"Retry-After": str(m.faults.retry_after)})
            if fault in ("500", "404"):
                return self.send(int(fault), page_html("Error", "<h1>Error</h1>").encode(), "text/html")
            if fault == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return None
            if path == "/robots.txt":
                if m.faults.robots_status != 200:
                    return self.send(m.faults.robots_status, b"", "text/plain")
                return self.send(200, robots_txt(m.faults).encode(), "text/plain")
            if path.startswith("/genre/"):
                return self.genre(unquote(path[len("/genre/"):]), query, page, fault)
            if path.startswith("/files/"):
                name = unquote(path[len("/files/"):])
                track = next((t for t in m.tracks.values() if t.file_name == name), None)
                if track is not None:
                    return self.send_body(m.audio(track), "audio/mpeg", fault)
            if path.startswith("/fma/"):
                name = unquote(path[len("/fma/"):])
                if name in m.archives:
                    return self.send_body(Path(m.archives[name]).read_bytes(), "application/zip", fault)
            if path.startswith("/music/"):
                track = next((t for t in m.tracks.values() if m.track_page_path(t) == path), None)
                if track is not None:
                    return self.send(200, track_page_html(track).encode(), "text/html; charset=UTF-8")
            return self.not_found()

        def not_found(self) -> None:
            self.send(404, page_html("Page not found", "<h1>404</h1><p>Page not found</p>").encode(), "text/html")

        def genre(self, genre: str, query: dict, page: int, fault: str | None) -> None:
            if genre not in m.listings:
                return self.not_found()
            if fault == "malformed":
                text = "<html><body><h1>Oops</h1><div class=\"play-list\"><div class="
                return self.send(200, text.encode(), "text/html; charset=UTF-8")
            size = int(query.get("pageSize", ["20"])[0] or 20)
            size = max(1, min(200, size))
            text = genre_page_html(m, genre, max(1, page), size, bad_json=fault == "bad-json")
            return self.send(200, text.encode(), "text/html; charset=UTF-8")

        def send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def send_body(self, data: bytes, ctype: str, fault: str | None) -> None:
            """A file with Range support and the body-level faults."""
            if fault == "html-type":
                ctype = "text/html; charset=UTF-8"
            if fault == "not-mp3":
                data = page_html("Download", "<p>Please log in to download</p>").encode()
            status, headers, start = 200, {"Accept-Ranges": "bytes"}, 0
            rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "") or "")
            if rng and int(rng.group(1)) < len(data):
                start = int(rng.group(1))
                end = int(rng.group(2)) if rng.group(2) else len(data) - 1
                end = min(end, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start : end + 1], 206
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if fault == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if fault == "slow":
                for i in range(0, len(data), 8192):
                    self.wfile.write(data[i : i + 8192])
                    self.wfile.flush()
                    time.sleep(m.faults.slow_delay_s)
                return
            self.wfile.write(data)

    return Handler
