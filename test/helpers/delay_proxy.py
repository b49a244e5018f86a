"""An HTTP reverse proxy on 127.0.0.1 (or an emulated host's address) that adds a fixed delay to every
request: S3's latency, locally, and, on request, S3's faults (:class:`Faults`): responses cut during
their headers or their body, 503 SlowDown answers, and connections closed during a PUT's
``Expect: 100-continue`` exchange.

Put in front of the moto S3 server (``AWS_ENDPOINT_URL`` = the proxy's URL), it
holds each request for ``delay_s`` before forwarding it, as S3 answers a GET
only after tens of milliseconds; requests are served on their own threads, so
delays overlap as they do on S3. It counts the requests it sees, the most in
flight at once and the time-averaged number in flight.

In a test or benchmark::

    with DelayProxy(moto_url, delay_s=0.05) as proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.url
        ...
        proxy.stats()   # {"requests": ..., "max_in_flight": ..., "mean_in_flight": ...}

From a shell (for a training run through the CLI); ``GET /__proxy__/stats``
returns the stats as JSON, ``POST /__proxy__/reset?delay_ms=20`` zeroes them
and sets a new delay::

    python test/helpers/delay_proxy.py http://127.0.0.1:5000 --delay-ms 50 --port 5050
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")


@dataclass
class Faults:
    """Which requests fail, counted over the data requests the proxy sees (0 = never):
    every ``body_every``-th response is cut halfway through its body, every ``headers_every``-th
    halfway through its status line and headers, every ``slowdown_every``-th is a 503 SlowDown;
    ``cut_continue`` closes every connection whose request asks ``Expect: 100-continue``."""

    body_every: int = 0
    headers_every: int = 0
    slowdown_every: int = 0
    cut_continue: bool = False

    def pick(self, n: int, has_body: bool) -> str:
        """The fault for the ``n``-th request (1-based), or ""."""
        if self.slowdown_every and n % self.slowdown_every == 0:
            return "slowdown"
        if self.headers_every and n % self.headers_every == 0:
            return "headers"
        if self.body_every and has_body and n % self.body_every == 0:
            return "body"
        return ""


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}
CONTROL = "/__proxy__/"


class _Counter:
    """Requests in flight over time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.faults: collections.Counter[str] = collections.Counter()
            self.requests = 0
            self.in_flight = 0
            self.max_in_flight = 0
            self._area = 0.0  # integral of in_flight over time
            self._t0 = self._t = time.perf_counter()

    def _advance(self) -> None:
        now = time.perf_counter()
        self._area += self.in_flight * (now - self._t)
        self._t = now

    def enter(self) -> None:
        with self._lock:
            self._advance()
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self._advance()
            self.in_flight -= 1

    def stats(self) -> dict[str, float]:
        with self._lock:
            self._advance()
            span = self._t - self._t0
            return {"requests": self.requests, "max_in_flight": self.max_in_flight,
                    "mean_in_flight": self._area / span if span > 0 else 0.0, "faults": dict(self.faults)}

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args) -> None:  # quiet
        pass

    def handle_expect_100(self) -> bool:
        self.server.counter.fault("expect_continue_seen")
        if self.server.faults.cut_continue:
            self.server.counter.fault("continue")
            self._hang_up()
            return False
        return super().handle_expect_100()

    def _hang_up(self) -> None:
        """Close the client's connection now, whatever was sent."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _faulty(self, kind: str, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        """Answer with fault ``kind`` instead of the upstream's response."""
        self.server.counter.fault(kind)
        if kind == "slowdown":
            self.send_response(503, "Slow Down")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOWDOWN)))
            self.end_headers()
            self.wfile.write(SLOWDOWN)
            return
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        head += f"Content-Length: {len(data)}\r\n\r\n"
        if kind == "headers":
            self.wfile.write(head.encode()[: len(head) // 2])
        else:  # "body": all the headers, half the body
            self.wfile.write(head.encode() + data[: len(data) // 2])
        self._hang_up()

    def _upstream(self) -> http.client.HTTPConnection:
        local = self.server.local
        if getattr(local, "conn", None) is None:
            local.conn = http.client.HTTPConnection(self.server.upstream_host, self.server.upstream_port, timeout=60)
        return local.conn

    def _control(self) -> None:
        url = urlsplit(self.path)
        if url.path == CONTROL + "reset":
            query = parse_qs(url.query)
            if "delay_ms" in query:
                self.server.delay_s = float(query["delay_ms"][0]) / 1000
            self.server.counter.reset()
        body = json.dumps({**self.server.counter.stats(), "delay_ms": self.server.delay_s * 1000}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        if self.path.startswith(CONTROL):
            self._control()
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(501, "chunked request bodies are not supported by the delay proxy")
            return
        counter = self.server.counter
        counter.enter()
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(self.server.delay_s)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            for attempt in range(2):  # a kept-alive upstream connection may have been closed meanwhile
                conn = self._upstream()
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    break
                except (http.client.HTTPException, ConnectionError):
                    conn.close()
                    self.server.local.conn = None
                    if attempt:
                        raise
            with self.server.lock:
                self.server.seen += 1
                kind = self.server.faults.pick(self.server.seen, bool(data) and self.command != "HEAD")
            if kind:
                kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}]
                self._faulty(kind, resp.status, resp.reason, kept, data)
                return
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            counter.leave()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once; the default backlog of 5 drops SYNs

    def __init__(self, port: int, upstream: str, delay_s: float, faults: Faults | None = None,
                 host: str = "127.0.0.1"):
        super().__init__((host, port), _Handler)
        self.faults = faults or Faults()
        self.lock = threading.Lock()
        self.seen = 0  # data requests, for the fault schedule
        target = urlsplit(upstream)
        self.upstream_host, self.upstream_port = target.hostname, target.port or 80
        self.delay_s = delay_s
        self.counter = _Counter()
        self.local = threading.local()


class DelayProxy:
    """The proxy on a thread of this process (a free port unless ``port``); a context manager."""

    def __init__(self, upstream: str, delay_s: float = 0.05, port: int = 0, faults: Faults | None = None,
                 host: str = "127.0.0.1"):
        self._server = _Server(port, upstream, delay_s, faults, host)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="delay-proxy")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def delay_s(self) -> float:
        return self._server.delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self._server.delay_s = value

    def stats(self) -> dict[str, float]:
        return self._server.counter.stats()

    def reset(self) -> None:
        self._server.counter.reset()

    def start(self) -> "DelayProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "DelayProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("upstream", help="the server to forward to, e.g. http://127.0.0.1:5000")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (an emulated host's)")
    args = parser.parse_args()
    proxy = DelayProxy(args.upstream, args.delay_ms / 1000, args.port, host=args.host)
    print(proxy.url, flush=True)
    proxy._server.serve_forever()


if __name__ == "__main__":
    main()
