"""Constants and helpers of the AWS tests; the moto server and ``aws_env`` are fixtures in conftest.py."""
from __future__ import annotations

import textwrap
from pathlib import Path

import boto3

SECRET = "wAvEfOrMsTeStSeCrEt0123456789abcdefSECRET"  # must never appear in output or requests
REGION = "us-east-1"
BUCKET = "waveforms-test"


def client(service: str):
    return boto3.session.Session(region_name=REGION).client(service)


def keys(bucket: str = BUCKET) -> list[str]:
    """All object keys in ``bucket`` (empty when the bucket does not exist)."""
    s3 = client("s3")
    if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        return []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def write_config(path: Path, body: str = "", bucket: str = BUCKET, stages: str = '["transform", "train"]') -> Path:
    """An emr config with an [aws] table (plus ``body``, e.g. stage tables)."""
    path.write_text(
        textwrap.dedent(
            f"""
            [aws]
            region = "{REGION}"
            bucket = "{bucket}"
            prefix = "wf"
            core_instance_count = 2
            stages = {stages}
            """
        )
        + textwrap.dedent(body)
    )
    return path


class TrippingProxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server that goes down after a chosen request.

    Once the upstream has answered (200) a request whose bytes contain ``trip``, every
    connection is closed and new ones are refused (closed at once) until
    :meth:`restore`: an S3 outage that starts at a known point of a run.
    """

    def __init__(self, upstream: str, trip: bytes):
        import socket
        import threading
        from urllib.parse import urlparse

        url = urlparse(upstream)
        self.upstream = (url.hostname, url.port)
        self.trip = trip
        self.down = threading.Event()
        self.tripped = threading.Event()
        self._lock = threading.Lock()
        self._open: list = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._open += [client, upstream]
            state = {"tripping": False}
            threading.Thread(target=self._pipe, args=(client, upstream, state, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, state, False), daemon=True).start()

    def _pipe(self, src, dst, state: dict, to_upstream: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if self.down.is_set():
                    break
                dst.sendall(chunk)
                if to_upstream and self.trip in chunk and not self.tripped.is_set():
                    state["tripping"] = True
                elif not to_upstream and state["tripping"] and b" 200 " in chunk:  # not "100 Continue"
                    self.tripped.set()
                    self._go_down()
                    break
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def _go_down(self) -> None:
        import socket

        self.down.set()
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self._server.close()
        self._go_down()
