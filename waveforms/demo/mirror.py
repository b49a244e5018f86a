"""A small FMA-format HTTP server on 127.0.0.1: genre pages, track pages, MP3s, archives.

It serves the same markup the scraper reads on freemusicarchive.org (``div.play-item``
with ``data-track-info`` JSON, ``a.pagination-next``, ``div.pagination-full``, track
pages with ``a[rel=license]``), a robots.txt (:class:`Robots`), ``/files/<name>.mp3``
and ``/fma/<name>.zip`` (both with HTTP Range), and logs every request
(:attr:`Mirror.log`). ``make demo`` runs it over Debian's hyperrogue-music (see
:mod:`waveforms.demo.music`); the markup is in :mod:`waveforms.demo.markup`. A subclass
may answer differently by giving its own :attr:`Mirror.handler` (the tests' faults).
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
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
class Robots:
    """What the mirror's robots.txt says: the paths it disallows and its ``Content-Signal`` line (empty: none)."""

    disallow: list[str] = field(default_factory=list)
    content_signal: str = ""


# -- request handling ------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    """Answers one request from the mirror's tracks, listings and archives."""

    protocol_version = "HTTP/1.1"
    server_version = "fma-mirror/1"

    @property
    def mirror(self) -> Mirror:
        return self.server.mirror  # type: ignore[attr-defined]

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("%s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        path = parts.path
        page = int(query.get("page", ["1"])[0] or 1) if path.startswith("/genre/") else 0
        entry = {"path": path, "key": f"{path}?page={page}" if page else path, "query": parts.query,
                 "range": self.headers.get("Range"), "ua": self.headers.get("User-Agent"), "time": time.monotonic()}
        self.mirror.record(entry)
        try:
            self.route(path, query, page, entry)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def route(self, path: str, query: dict, page: int, entry: dict[str, Any]) -> None:
        """Answer ``path``; ``entry`` is this request's line in the mirror's log (its ``key``: path and page)."""
        m = self.mirror
        if path == "/robots.txt":
            return self.send(200, robots_txt(m.robots.disallow, m.robots.content_signal).encode(), "text/plain")
        if path.startswith("/genre/"):
            return self.genre(unquote(path[len("/genre/"):]), query, page)
        if path.startswith("/files/"):
            name = unquote(path[len("/files/"):])
            track = next((t for t in m.tracks.values() if t.file_name == name), None)
            if track is not None:
                return self.send_body(m.audio(track), "audio/mpeg")
        if path.startswith("/fma/"):
            name = unquote(path[len("/fma/"):])
            if name in m.archives:
                return self.send_body(Path(m.archives[name]).read_bytes(), "application/zip")
        if path.startswith("/music/"):
            track = next((t for t in m.tracks.values() if m.track_page_path(t) == path), None)
            if track is not None:
                return self.send(200, track_page_html(track).encode(), "text/html; charset=UTF-8")
        return self.not_found()

    def not_found(self) -> None:
        self.send(404, page_html("Page not found", "<h1>404</h1><p>Page not found</p>").encode(), "text/html")

    def genre(self, genre: str, query: dict, page: int) -> None:
        m = self.mirror
        if genre not in m.listings:
            return self.not_found()
        size = int(query.get("pageSize", ["20"])[0] or 20)
        size = max(1, min(200, size))
        return self.send(200, genre_page_html(m, genre, max(1, page), size).encode(), "text/html; charset=UTF-8")

    def send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_body(self, data: bytes, ctype: str) -> None:
        """A file, or the part of it a ``Range`` header asks for."""
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
        self.write_body(data)

    def write_body(self, data: bytes) -> None:
        """The body's bytes, after the headers."""
        self.wfile.write(data)



class Mirror:
    """The server; use as a context manager or ``start()``/``stop()``."""

    handler: type[Handler] = Handler  # answers each request; a subclass may give its own

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
        self.robots = Robots()
        self.log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self.handler)
        self._server.daemon_threads = True
        self._server.mirror = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self._bytes: dict[int, bytes] = {}

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- URLs and request keys -----------------------------------------------
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

    def record(self, entry: dict[str, Any]) -> None:
        """Add one request's entry to :attr:`log`."""
        with self._log_lock:
            self.log.append(entry)

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
