"""An HTTP reverse proxy on 127.0.0.1 (or an emulated host's address) that adds a fixed delay to every
request: S3's latency, locally, and, on request, S3's faults: responses cut at any byte of their status
line, headers or body, reset before their first byte, stalled, or replaced by a 503 SlowDown, and
connections closed during a PUT's ``Expect: 100-continue`` exchange. :class:`Faults` picks them by rule
(every n-th request, or 1 in n chunks at a seeded random byte); :class:`Script` by plan (the next request
that matches takes the next fault), for a harness that cuts one answer at a time.

The proxy writes each answer's bytes itself (the upstream's status line and headers, its own
Content-Length, the blank line, the body), so a cut at byte k is exactly the first k bytes of that.

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
import os
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Union
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CUT_SEED = int(os.environ.get("WAVEFORMS_CUT_SEED", "20261206"))  # the tests' random cuts' seed (set it to try others)
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")


@dataclass(frozen=True)
class Cut:
    """Send the first ``at`` bytes of the answer (status line, headers, blank line, body), then close."""

    at: int


@dataclass(frozen=True)
class Reset:
    """Close the connection with a TCP reset before the answer's first byte."""


@dataclass(frozen=True)
class Stall:
    """Send the first ``at`` bytes of the answer, then nothing for ``seconds``, then close."""

    seconds: float
    at: int = 0


@dataclass(frozen=True)
class SlowDown:
    """A 503 SlowDown instead of the answer."""


Action = Union[Cut, Reset, Stall, SlowDown]


@dataclass(frozen=True)
class Answer:
    """What a fault is chosen from: the ``n``-th data request (1-based), its method, path and query, and the
    lengths of the answer's head (status line to blank line) and body."""

    n: int
    method: str
    path: str
    head: int
    body: int


@dataclass
class Faults:
    """Which requests fail, counted over the data requests the proxy sees (0 = never):
    every ``body_every``-th response is cut halfway through its body, every ``headers_every``-th
    halfway through its status line and headers, every ``slowdown_every``-th is a 503 SlowDown;
    with ``cut_chunks`` = n, each chunk of an answer (its head, then each ``chunk`` bytes of its body) is
    cut with probability 1/n at a random byte (``seed``: the generator's seed);
    ``cut_continue`` closes every connection whose request asks ``Expect: 100-continue``."""

    body_every: int = 0
    headers_every: int = 0
    slowdown_every: int = 0
    cut_continue: bool = False
    cut_chunks: int = 0
    seed: int = 0
    chunk: int = 65536
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def pick(self, answer: Answer) -> Action | None:
        """The fault for ``answer``, or None (called under the proxy's lock, in the order requests arrive)."""
        n, head, body = answer.n, answer.head, answer.body
        if self.slowdown_every and n % self.slowdown_every == 0:
            return SlowDown()
        if self.headers_every and n % self.headers_every == 0:
            return Cut(head // 2)
        if self.body_every and body and n % self.body_every == 0:
            return Cut(head + body // 2)
        if self.cut_chunks:
            starts = [(0, head)] + [(head + s, min(self.chunk, body - s)) for s in range(0, body, self.chunk)]
            for start, size in starts:
                if self._rng.random() < 1 / self.cut_chunks:
                    return Cut(start + self._rng.randrange(size))
        return None


class Script:
    """Faults by plan: :meth:`add` queues a fault for the next request whose method is ``method`` (any if
    empty) and whose path and query contain ``match``; requests that match no queued fault pass."""

    def __init__(self) -> None:
        self._plan: list[tuple[str, str, Action]] = []
        self._lock = threading.Lock()
        self.cut_continue = False

    def add(self, action: Action, method: str = "", match: str = "", times: int = 1) -> "Script":
        with self._lock:
            self._plan += [(method, match, action)] * times
        return self

    def pending(self) -> int:
        """Queued faults no request has taken yet."""
        with self._lock:
            return len(self._plan)

    def clear(self) -> None:
        with self._lock:
            self._plan.clear()

    def pick(self, answer: Answer) -> Action | None:
        with self._lock:
            for i, (method, match, action) in enumerate(self._plan):
                if (not method or method == answer.method) and match in answer.path:
                    del self._plan[i]
                    return action
        return None


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

    def _reset(self) -> None:
        """Close the client's connection with a TCP reset (SO_LINGER 0), before any byte of the answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _answer(self, head: bytes, data: bytes, action: Action | None) -> None:
        """Send ``head`` + ``data``, or what ``action`` makes of them; count the fault."""
        counter = self.server.counter
        if isinstance(action, SlowDown):
            counter.fault("slowdown")
            self.wfile.write(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(SLOWDOWN), SLOWDOWN))
            return
        if isinstance(action, Reset):
            counter.fault("reset")
            self._reset()
            return
        raw = head + data
        if isinstance(action, Cut):
            counter.fault("headers" if action.at < len(head) else "body")
            self.wfile.write(raw[:action.at])
            self._hang_up()
            return
        if isinstance(action, Stall):
            counter.fault("stall")
            self.wfile.write(raw[:action.at])
            self.wfile.flush()
            self.server.stopping.wait(action.seconds)
            self._hang_up()
            return
        self.wfile.write(raw)

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
            if self.server.delay_s:
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
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}]
            length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
            if length is not None:
                kept.append(("Content-Length", length))
            head = (f"HTTP/1.1 {resp.status} {resp.reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in kept)
                    + "\r\n").encode("latin-1")
            if self.command == "HEAD":
                data = b""
            with self.server.lock:
                self.server.seen += 1
                answer = Answer(self.server.seen, self.command, self.path, len(head), len(data))
                action = self.server.faults.pick(answer)
                self.server.answers.append((answer, action))
            self._answer(head, data, action)
        finally:
            counter.leave()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once; the default backlog of 5 drops SYNs

    def __init__(self, port: int, upstream: str, delay_s: float, faults: Faults | Script | None = None,
                 host: str = "127.0.0.1"):
        super().__init__((host, port), _Handler)
        self.faults = faults or Faults()
        self.answers: collections.deque[tuple[Answer, Action | None]] = collections.deque(maxlen=10_000)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.seen = 0  # data requests, for the fault schedule
        target = urlsplit(upstream)
        self.upstream_host, self.upstream_port = target.hostname, target.port or 80
        self.delay_s = delay_s
        self.counter = _Counter()
        self.local = threading.local()


class DelayProxy:
    """The proxy on a thread of this process (a free port unless ``port``); a context manager."""

    def __init__(self, upstream: str, delay_s: float = 0.05, port: int = 0, faults: Faults | Script | None = None,
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

    @property
    def answers(self) -> collections.deque[tuple[Answer, Action | None]]:
        """The latest data requests' answers (at most 10,000), each with the fault it got (None: whole)."""
        return self._server.answers

    def reset(self) -> None:
        self._server.counter.reset()

    def start(self) -> "DelayProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()
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
    parser.add_argument("--cut-chunks", type=int, default=0, metavar="N",
                        help="cut 1 in N answer chunks (the head, each 64 KiB of the body) at a random byte")
    parser.add_argument("--seed", type=int, default=0, help="the random cuts' seed")
    args = parser.parse_args()
    proxy = DelayProxy(args.upstream, args.delay_ms / 1000, args.port, host=args.host,
                       faults=Faults(cut_chunks=args.cut_chunks, seed=args.seed))
    print(proxy.url, flush=True)
    proxy._server.serve_forever()


if __name__ == "__main__":
    main()
