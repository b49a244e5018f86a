"""A small FMA-format HTTP server on 127.0.0.1: genre pages, track pages, MP3s, archives.

It serves the same markup the scraper reads on freemusicarchive.org (``div.play-item``
with ``data-track-info`` JSON, ``a.pagination-next``, ``div.pagination-full``, track
pages with ``a[rel=license]``), a robots.txt, ``/files/<name>.mp3`` and ``/fma/<name>.zip``
(both with HTTP Range), and can inject faults for tests. ``make demo`` runs it over
Debian's hyperrogue-music (CC BY-SA 3.0)::

    python -m waveforms.scrape.mirror --music-dir /usr/share/hyperrogue/music \\
        --cache CACHE --port 0 --url-file URL_FILE [--seconds 20]

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

import argparse
import hashlib
import html
import json
import logging
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

log = logging.getLogger(__name__)

CC_BY_SA_3 = "https://creativecommons.org/licenses/by-sa/3.0/"

# Artists of Debian's hyperrogue-music (see /usr/share/doc/hyperrogue-music/copyright).
HYPERROGUE_ARTISTS = {
    "hr3-": "Shawn Parrotte",
    "hr-domina-": "Lincoln Domina",
    "hr-savino-": "Will Savino",
}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


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


# -- markup -------------------------------------------------------------------
def attr_single(info: dict) -> str:
    """JSON in a single-quoted attribute, as the live site sends it (``\\/`` slashes)."""
    text = json.dumps(info, separators=(",", ":"), ensure_ascii=False).replace("/", "\\/")
    for ch, esc in (("&", "\\u0026"), ("'", "\\u0027"), ("<", "\\u003C"), (">", "\\u003E")):
        text = text.replace(ch, esc)
    return f"data-track-info='{text}'"


def attr_escaped(info: dict) -> str:
    """JSON HTML-escaped in a double-quoted attribute, as a browser's saved page has it."""
    text = json.dumps(info, separators=(",", ":"), ensure_ascii=False).replace("/", "\\/")
    return f'data-track-info="{html.escape(text, quote=True)}"'


def page_html(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{html.escape(title)} - Free Music Archive</title></head>\n<body>\n{body}\n</body></html>\n"
    )


def genre_page_html(
    m: Mirror, genre: str, page: int, size: int, bad_json: bool = False
) -> str:
    ids = m.listings[genre]
    total = len(ids)
    start = (page - 1) * size
    items = []
    for tid in ids[start : start + size]:
        t = m.tracks[tid]
        info = m.track_info(t)
        attr = attr_single(info) if page % 2 else attr_escaped(info)
        if bad_json:
            attr = "data-track-info='{\"id\":" + str(tid) + ",\"title\":\"cut'"
        items.append(
            f'<div class="play-item gcol grid w-full gid-{slug(genre)} tid-{tid}" {attr}>\n'
            f'  <span class="ptxt-track"><a href="{html.escape(info["url"])}">{html.escape(t.title)}</a></span>\n'
            f'  <span class="ptxt-artist"><a href="{html.escape(info["artistUrl"])}">{html.escape(t.artist)}</a></span>\n'
            f"</div>"
        )
    link = lambda n: (  # noqa: E731
        f"{m.url}/genre/{quote(genre, safe='')}?sort=date&amp;d=0&amp;pageSize={size}&amp;page={n}"
    )
    pages = max(1, -(-total // size))
    nav = [f'<span class="bg-blue text-white">{page}</span>' if n == page else f'<a href="{link(n)}">{n}</a>'
           for n in range(1, pages + 1)]
    if page < pages:
        nav.append(f'<a href="{link(page + 1)}" class="inline-flex pagination-next" title="Next"><span>&gt;</span></a>')
    shown_end = min(start + size, total)
    pagination = (
        '<div class="pagination-full flex flex-wrap gap-4 mt-4">\n'
        f'<div class="flex mr-auto items-center"><span class="flex gap-1"><b>{start + 1}</b> - '
        f"<b>{shown_end}</b> of <b>{total}</b></span></div>\n"
        f'<div class="font-[500] flex flex-wrap items-center gap-1">{"".join(nav)}</div>\n</div>'
    )
    body = f'<h1>{html.escape(genre)}</h1>\n<div class="play-list">\n' + "\n".join(items) + "\n</div>\n" + pagination
    return page_html(genre, body)


def track_page_html(t: MirrorTrack) -> str:
    lic = ""
    if t.licence:
        lic = (
            f'<div class="licence">This track is licensed under a '
            f'<a rel="license" href="{html.escape(t.licence)}" target="_blank">Creative Commons licence</a>.</div>'
        )
    body = f'<h1>{html.escape(t.title)}</h1>\n<p class="artist">{html.escape(t.artist)}</p>\n{lic}'
    return page_html(f"{t.artist} - {t.title}", body)


def robots_txt(f: Faults) -> str:
    lines = ["User-agent: *"]
    lines += [f"Disallow: {p}" for p in f.robots_disallow] or ["Allow: /"]
    if f.content_signal:
        lines.append(f"Content-Signal: {f.content_signal}")
    return "\n".join(lines) + "\n"


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


# -- audio --------------------------------------------------------------------------
def ffmpeg_mp3(src_args: list[str], out: Path, seconds: float, tags: dict[str, str] | None = None,
               bitrate: str = "128k") -> Path:
    """Encode with ffmpeg to ``out`` (written to a temporary name, then renamed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.mp3")
    meta = [a for k, v in (tags or {}).items() for a in ("-metadata", f"{k}={v}")]
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *src_args, "-t", str(seconds),
           "-codec:a", "libmp3lame", "-b:a", bitrate, *meta, str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed for {out.name}: {proc.stderr.strip()[-300:]}")
    tmp.replace(out)
    return out


def sine_mp3(out: Path, freq: float = 440.0, seconds: float = 1.0, rate: int = 22050, channels: int = 1) -> Path:
    """A sine tone as MP3 (for tests and benchmarks)."""
    src = ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}"]
    return ffmpeg_mp3(src + ["-ac", str(channels)], out, seconds, bitrate="64k")


def hyperrogue_tracks(music_dir: Path, cache: Path, seconds: float) -> list[MirrorTrack]:
    """Encode the hyperrogue-music Ogg files to MP3 (cached) and describe them as FMA tracks.

    Shawn Parrotte's pieces are listed under "Soundtrack", the others under "Ambient";
    every second Parrotte piece also appears under "Ambient" (as on FMA, a track may
    carry several genres). Files ffmpeg cannot decode are skipped with a warning.
    """
    tracks = []
    for n, ogg in enumerate(sorted(Path(music_dir).glob("*.ogg"))):
        artist = next((a for p, a in HYPERROGUE_ARTISTS.items() if ogg.name.startswith(p)), None)
        if artist is None:
            continue
        title = ogg.stem.split("-")[-1].replace("_", " ").title()
        genres = ["Soundtrack"] if ogg.name.startswith("hr3-") else ["Ambient"]
        if ogg.name.startswith("hr3-") and n % 2:
            genres.append("Ambient")
        mp3 = cache / f"{ogg.stem}-{seconds:g}s.mp3"
        if not mp3.exists():
            tags = {"title": title, "artist": artist, "album": "HyperRogue", "genre": genres[0],
                    "copyright": f"CC BY-SA 3.0 {CC_BY_SA_3}"}
            try:
                ffmpeg_mp3(["-i", str(ogg)], mp3, seconds, tags)
            except RuntimeError as exc:
                log.warning("skipping %s: %s", ogg.name, exc)
                continue
        tracks.append(MirrorTrack(id=1000 + n, title=title, artist=artist, mp3=mp3, genres=genres,
                                  album="HyperRogue"))
    return tracks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m waveforms.scrape.mirror", description=__doc__.splitlines()[0])
    p.add_argument("--music-dir", default="/usr/share/hyperrogue/music", help="folder of hyperrogue-music .ogg files")
    p.add_argument("--cache", default="mirror-cache", help="folder for the encoded MP3s (reused)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of each piece to serve")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port")
    p.add_argument("--url-file", help="write the base URL here once listening")
    p.add_argument("--content-signal", default="", help="e.g. 'ai-train=no' to test the refusal")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tracks = hyperrogue_tracks(Path(args.music_dir), Path(args.cache), args.seconds)
    if not tracks:
        print(f"no usable .ogg files in {args.music_dir}", file=sys.stderr)
        return 1
    mirror = Mirror(tracks, host=args.host, port=args.port)
    mirror.faults.content_signal = args.content_signal
    genres = ", ".join(f"{g} ({len(ids)})" for g, ids in sorted(mirror.listings.items()))
    print(f"FMA-format mirror at {mirror.url}: {len(tracks)} tracks; genres {genres}", flush=True)
    if args.url_file:
        from waveforms import storage

        storage.write_text(args.url_file, mirror.url + "\n")
    try:
        mirror._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        mirror._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
