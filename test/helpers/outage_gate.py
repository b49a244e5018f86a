"""A TCP gate on 127.0.0.1 in front of a server (the moto S3 server) that can go down: an outage of S3 or
of the path to it, at the level of connections.

Up, it forwards every connection byte for byte. :meth:`OutageGate.down` closes its listening socket
(a new connection is refused: ``ECONNREFUSED``) and every open connection (a kept-alive connection
fails at its next request); :meth:`OutageGate.up` listens again on the same port. With ``refuse``, the
gate stays up but closes each new connection whose first bytes ``refuse`` rejects, before forwarding
anything (an outage of some requests: ``lambda head: not head.startswith(b"GET /bucket?list-type=2")``
lets listings through and nothing else)::

    with OutageGate(moto_url) as gate:
        os.environ["AWS_ENDPOINT_URL"] = gate.url
        gate.down()        # S3 unreachable
        gate.up()          # back
"""
from __future__ import annotations

import socket
import threading
from typing import Callable
from urllib.parse import urlsplit


class OutageGate:
    """The gate on a thread of this process (a free port); a context manager."""

    def __init__(self, upstream: str, refuse: Callable[[bytes], bool] | None = None):
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port or 80)
        self.refuse = refuse
        self.refused = 0  # connections closed by ``refuse``
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True, name="outage-gate").start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by down()
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            head = client.recv(65536)
            if not head or (self.refuse is not None and self.refuse(head)):
                with self._lock:
                    self.refused += bool(head)
                client.close()
                return
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open |= {client, upstream}
        upstream.sendall(head)
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:
            self._close(sock)

    def up(self) -> None:
        """Listen again, on the same port."""
        if self._listener is None:
            self._listen()

    def __enter__(self) -> "OutageGate":
        return self

    def __exit__(self, *exc) -> None:
        self.down()
