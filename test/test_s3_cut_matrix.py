"""Cut anywhere: every S3 operation the project makes, with one answer cut at every byte of its status line
and header block and at a spread of body offsets, reset before its first byte, stalled past the read
timeout, or answered 503 at every attempt up to the last (and at every attempt).

Each case must end in one of two ways: the operation's fault-free result (the same bytes, listing or
object state, read from the server directly), or a :class:`~waveforms.storage.s3retry.StorageError` naming the
object and the attempts. Any other exception, a wrong or short result, or a hang fails it. One moto server
and one proxy (:class:`helpers.delay_proxy.Script`) serve the whole module; the backoff's sleeps are
injected (recorded, not slept), so the matrix runs in the normal tier.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import boto3
import boto3.s3.transfer
import botocore.endpoint
import pytest

from helpers.aws import REGION
from helpers.delay_proxy import Answer, Cut, DelayProxy, Reset, Script, SlowDown, Stall
from waveforms import storage
from waveforms.storage import s3retry

BUCKET = "cut-matrix"
READ_TIMEOUT_S = 0.2  # the clients' read timeout here: a stall of STALL_S outlasts it
STALL_S = 0.6
CASE_TIMEOUT_S = 60  # a case that takes longer hangs


@dataclass
class Op:
    """One S3 operation of the project: ``run()`` through storage, the request to cut (``method``, a
    substring of its path and query), the fault-free result, and the object it names (in its errors)."""

    name: str
    method: str
    match: str
    run: Callable[[], Any]
    names: str
    before: Callable[[], None] = lambda: None
    result: Callable[[Any], Any] = lambda got: got  # what is compared: the return value or the object state
    expected: Any = None
    slowdowns: bool = True  # 503 at every attempt (an abort's failure only leaves an upload to clean up)


@dataclass
class World:
    moto: str
    proxy: DelayProxy
    script: Script
    direct: Any  # a client of the moto server itself, past the proxy
    client: Any  # the client the operations use, through the proxy
    tmp: Path
    sleeps: list[float] = field(default_factory=list)


class SmallParts(boto3.s3.transfer.TransferConfig):
    """Multipart uploads from 64 KiB on (boto3's default is 8 MiB): one ~100 KB part per upload keeps each of
    the ~2,000 multipart cases a few milliseconds instead of an 8 MiB transfer."""

    def __init__(self, **kwargs):
        super().__init__(**{"multipart_threshold": 64 << 10, **kwargs})


class RecordedSleeps:
    """The ``time`` module for botocore's endpoint, its ``sleep`` appending to ``sleeps`` instead."""

    def __init__(self, sleeps: list[float]):
        self.sleep = sleeps.append

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = f"http://{host}:{port}"
    script = Script()
    sleeps: list[float] = []
    with pytest.MonkeyPatch.context() as mp, DelayProxy(moto, delay_s=0.0, faults=script) as proxy:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
            mp.delenv(name, raising=False)
        tmp = tmp_path_factory.mktemp("cuts")
        for key, value in {"AWS_ACCESS_KEY_ID": "AKIAWAVEFORMSTEST", "AWS_SECRET_ACCESS_KEY": "cut-matrix-secret",
                           "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": proxy.url,
                           "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"), "AWS_CONFIG_FILE": str(tmp / "none"),
                           "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(key, value)
        # botocore's backoff sleeps (botocore/endpoint.py: time.sleep) recorded, not slept. Only its module's
        # ``time``: a process-wide time.sleep patch made every other thread of the worker that sleeps in a loop
        # spin, and grew this list by gigabytes in a whole-suite run
        mp.setattr(botocore.endpoint, "time", RecordedSleeps(sleeps))
        mp.setattr(s3retry, "BACKOFF_S", 0.0)  # call's own backoff: sleep(0)
        mp.setattr(s3retry, "READ_TIMEOUT_S", READ_TIMEOUT_S)
        mp.setattr(boto3.s3.transfer, "TransferConfig", SmallParts)
        client = storage.s3_client()
        mp.setattr(storage, "s3_client", lambda *a, **k: client)  # exists() makes its own: the same one here
        client.meta.events.register("provide-client-params.s3.ListObjectsV2", three_keys_a_page)
        direct = boto3.session.Session(region_name=REGION).client("s3", endpoint_url=moto)
        direct.create_bucket(Bucket=BUCKET)
        yield World(moto, proxy, script, direct, client, tmp, sleeps)
    server.stop()


def three_keys_a_page(params: dict, **_) -> None:
    """So that a listing of seven keys takes continuations (S3's pages hold 1,000 keys)."""
    params.setdefault("MaxKeys", 3)


def blob(n: int) -> bytes:
    return os.urandom(n)


def ops(w: World) -> dict[str, Op]:
    """The operations, each with its objects in place (made once per module)."""
    uri = f"s3://{BUCKET}"
    data = {key: blob(n) for key, n in (("get.bin", 3000), ("range.bin", 5000), ("stream.bin", 4000),
                                       ("head.bin", 10)) + tuple((f"l/{i}", 100 + i) for i in range(7))}
    for key, value in data.items():
        w.direct.put_object(Bucket=BUCKET, Key=key, Body=value)
    put, mpu = blob(2000), w.tmp / "mpu.bin"
    mpu.write_bytes(blob(100_000))

    def stored(key: str) -> Callable[[Any], bytes | None]:
        def read(_: Any) -> bytes | None:
            try:
                return w.direct.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            except w.direct.exceptions.NoSuchKey:
                return None
        return read

    def absent(key: str) -> Callable[[], None]:
        return lambda: w.direct.delete_object(Bucket=BUCKET, Key=key)

    def upload_failing_once() -> None:  # one whole upload fails (its part 503 at each of botocore's tries)
        w.script.add(SlowDown(), "PUT", "partNumber=", times=s3retry.botocore_requests())
        storage.upload_file(mpu, f"{uri}/w/mpu.bin", w.client)

    upload = dict(run=lambda: storage.upload_file(mpu, f"{uri}/w/mpu.bin", w.client), names=f"{uri}/w/mpu.bin",
                  before=absent("w/mpu.bin"), result=stored("w/mpu.bin"), expected=mpu.read_bytes())
    listing = {f"{uri}/l/{i}": 100 + i for i in range(7)}
    return {op.name: op for op in [
        Op("GET", "GET", "/get.bin", lambda: storage.read_bytes(f"{uri}/get.bin", w.client), f"{uri}/get.bin",
           expected=data["get.bin"]),
        Op("ranged GET", "GET", "/range.bin", lambda: storage.read_range(f"{uri}/range.bin", 100, 1000, w.client),
           f"{uri}/range.bin", expected=data["range.bin"][100:1100]),
        Op("GET stream", "GET", "/stream.bin",
           lambda: b"".join(storage.iter_bytes(f"{uri}/stream.bin", 1000, w.client)), f"{uri}/stream.bin",
           expected=data["stream.bin"]),
        Op("HEAD", "HEAD", "/head.bin", lambda: storage.exists(f"{uri}/head.bin"), f"{uri}/head.bin", expected=True),
        Op("HEAD missing", "HEAD", "/none.bin", lambda: storage.exists(f"{uri}/none.bin"), f"{uri}/none.bin",
           expected=False),
        Op("LIST", "GET", "list-type=2", lambda: storage.list_sizes(f"{uri}/l", w.client), f"{uri}/l/",
           expected=listing),
        Op("LIST continuation", "GET", "continuation-token=", lambda: storage.list_sizes(f"{uri}/l", w.client),
           f"{uri}/l/", expected=listing),
        Op("PUT", "PUT", "/w/put.bin", lambda: storage.write_bytes(f"{uri}/w/put.bin", put, w.client),
           f"{uri}/w/put.bin", before=absent("w/put.bin"), result=stored("w/put.bin"), expected=put),
        Op("multipart create", "POST", "?uploads", **upload),
        Op("multipart part", "PUT", "partNumber=", **upload),
        Op("multipart complete", "POST", "uploadId=", **upload),
        Op("multipart abort", "DELETE", "uploadId=", **{**upload, "run": upload_failing_once}, slowdowns=False),
        Op("DELETE", "DELETE", "/w/del.bin", lambda: storage.delete(f"{uri}/w/del.bin", w.client),
           f"{uri}/w/del.bin", before=lambda: w.direct.put_object(Bucket=BUCKET, Key="w/del.bin", Body=b"x"),
           result=stored("w/del.bin"), expected=None),
    ]}


@pytest.fixture(scope="module")
def operations(world) -> dict[str, Op]:
    return ops(world)


def probe(w: World, op: Op) -> Answer:
    """The fault-free answer to the request ``op`` cuts (its head and body lengths), checked against the
    expected result."""
    op.before()
    w.proxy.answers.clear()
    assert op.result(op.run()) == op.expected, f"{op.name}: wrong result without a fault"
    found = [a for a, _ in list(w.proxy.answers) if a.method == op.method and op.match in a.path]
    assert found, f"{op.name}: no {op.method} request with {op.match!r} seen"
    return found[0]


def cases(op: Op, answer: Answer) -> list[tuple[str, list]]:
    """(label, faults to queue) for every case of ``op``."""
    head, body = answer.head, answer.body
    out = [(f"cut at byte {k} of the head", [Cut(k)]) for k in range(head)]
    if body:
        offsets = sorted({0, 1, body // 4, body // 2, 3 * body // 4, body - 1})
        out += [(f"cut at byte {k} of the body", [Cut(head + k)]) for k in offsets]
        out.append(("stall in the body", [Stall(STALL_S, head + body // 2)]))
    out += [("reset before the first byte", [Reset()]), ("stall before the first byte", [Stall(STALL_S)])]
    if op.slowdowns:
        last = s3retry.ATTEMPTS * s3retry.botocore_requests()
        out += [(f"503 at attempts 1..{last - 1}", [SlowDown()] * (last - 1)),
                ("503 at every attempt", [SlowDown()] * (4 * last))]
    return out


def outcome(w: World, op: Op, faults: list, pool: ThreadPoolExecutor) -> str | None:
    """None when the case ended in one of the two allowed ways, else what went wrong."""
    op.before()
    w.script.clear()
    for fault in faults:
        w.script.add(fault, op.method, op.match)
    persistent = len(faults) > s3retry.ATTEMPTS * s3retry.botocore_requests()
    future = pool.submit(run_bounded, op.run) if persistent else pool.submit(op.run)
    try:
        got = future.result(timeout=CASE_TIMEOUT_S)
    except FutureTimeout:
        return f"hung for more than {CASE_TIMEOUT_S} s"
    except s3retry.StorageError as exc:
        text = str(exc)
        if op.names not in text or "attempts" not in text:
            return f"StorageError that does not name {op.names} and the attempts: {text}"
        return None if persistent else f"StorageError after one fault: {text}"
    except Exception as exc:  # noqa: BLE001 - any other exception is what the matrix looks for
        return f"{type(exc).__name__}: {exc}"
    finally:
        w.script.clear()
    if persistent:
        return f"succeeded through a 503 at every attempt ({len(faults)} queued)"
    result = op.result(got)
    return None if result == op.expected else f"wrong result: {result!r:.80}"


def run_bounded(run: Callable[[], Any]) -> Any:
    """``run()`` with S3 outages not retried past the attempts (the sleeps are not slept: no time passes)."""
    with s3retry.bounded(0):
        return run()


NAMES = ["GET", "ranged GET", "GET stream", "HEAD", "HEAD missing", "LIST", "LIST continuation", "PUT",
         "multipart create", "multipart part", "multipart complete", "multipart abort", "DELETE"]


@pytest.mark.parametrize("name", NAMES)
def test_one_fault_anywhere_gives_the_fault_free_result_or_a_storage_error(world, operations, name, capsys):
    op = operations[name]
    answer = probe(world, op)
    t0 = time.perf_counter()
    failures = []
    with ThreadPoolExecutor(1, thread_name_prefix="cut-case") as pool:
        all_cases = cases(op, answer)
        for label, faults in all_cases:
            problem = outcome(world, op, faults, pool)
            if problem:
                failures.append(f"{label}: {problem}")
    with capsys.disabled():
        print(f"\n{name}: {len(all_cases)} cases (head {answer.head} B, body {answer.body} B) in "
              f"{time.perf_counter() - t0:.1f} s, {len(failures)} failed")
    assert not failures, f"{len(failures)} of {len(all_cases)} cases failed:\n" + "\n".join(failures[:25])
    assert max(world.sleeps, default=0.0) <= 20.0  # botocore's backoff stayed within its cap
