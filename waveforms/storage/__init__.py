"""Local paths and ``s3://bucket/key`` URIs behind one small interface.

S3 goes through boto3, which honours ``AWS_ENDPOINT_URL`` (AWS, MinIO, a test
server) and the standard credential chain. Local writes are atomic: data goes to
a temporary file in the same folder, is flushed, then renamed over the final name.
An S3 PUT is atomic by itself. :class:`RangeReader` keeps many ranged reads in
flight at once (S3 answers each after tens of milliseconds). Every S3 operation,
the reading of its body included, is retried after a network fault and bounded
in time (:mod:`waveforms.storage.s3retry`).

Outputs that are built from many files (a model folder, checkpoints, metrics)
are written through :class:`OutputDir`: a local working folder that mirrors an
``s3://`` prefix, uploaded file by file in an order that keeps a "commit" file
(``model.json``, a checkpoint pointer) last.

The package also holds what the stages agree on about the files they write: :mod:`.s3retry` (retries and the
outage bound of every S3 call), :mod:`.checksums` (size and SHA-256 records), :mod:`.jsonl` (manifests and
logs), :mod:`.runs` (run ids and the clean-up after a commit), :mod:`.versions` (artifact format versions)
and :mod:`.tracks` (track ids and file names).
"""
from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

from waveforms.runtime.errors import UserError, disk_full
from waveforms.storage.s3retry import call, client_config, configure


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


@contextlib.contextmanager
def s3_failures(root: str, error: type, what: str) -> Iterator[None]:
    """Inside: an S3 client's error reaching out becomes ``error(f"{what}: {exc}")``. A :class:`UserError` (a
    network fault after its retries is a ``StorageError``) passes unchanged, and so does anything on a local path."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # botocore's ClientError and BotoCoreError
        if not is_s3(root):
            raise
        raise error(f"{what}: {exc}") from exc


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri}")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join path parts for either kind of location."""
    if is_s3(base):
        out = base.rstrip("/")
        for p in parts:
            out += "/" + str(p).strip("/")
        return out
    return str(Path(base, *parts))


def parent(uri: str) -> str:
    """The folder (or prefix) holding ``uri``; "." for a bare local file name."""
    if is_s3(uri):
        return uri.rstrip("/").rpartition("/")[0]
    return str(Path(uri).parent)


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rpartition("/")[2]


def _object(uri: str, client=None) -> tuple[Any, str, str]:
    """The client for an ``s3://`` URI (``client``, or a new one), its bucket and its key."""
    bucket, key = split_s3(uri)
    return client or s3_client(), bucket, key


def s3_client(max_pool_connections: int | None = None):
    """A boto3 S3 client; create one per process or Spark partition, never ship it.

    ``max_pool_connections``: HTTP connections it keeps (botocore's default is 10). Its
    timeouts, retries and headers are :mod:`waveforms.storage.s3retry`'s.
    """
    import boto3

    return configure(boto3.session.Session().client("s3", config=client_config(max_pool_connections)))


def exists(uri: str) -> bool:
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            call(f"HEAD {uri}", lambda: s3_client().head_object(Bucket=bucket, Key=key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
    return Path(uri).exists()


def whole_body(response: dict[str, Any]) -> bytes:
    """A GET's body, checked against the Content-Length S3 sent (every S3 answer has one); a response
    whose headers were cut off (no length) or whose body came up short is a transient fault."""
    data = response["Body"].read()
    expected = response.get("ContentLength")
    if expected is None or len(data) != expected:
        raise http.client.IncompleteRead(data, expected)
    return data


def read_bytes(uri: str, client=None) -> bytes:
    if is_s3(uri):
        s3, bucket, key = _object(uri, client)
        return call(f"GET {uri}", lambda: whole_body(s3.get_object(Bucket=bucket, Key=key)))
    return Path(uri).read_bytes()


def read_text(uri: str, client=None) -> str:
    return read_bytes(uri, client).decode("utf-8")


def read_range(uri: str, offset: int, length: int, client=None) -> bytes:
    """Read ``length`` bytes at ``offset`` (an HTTP Range request on S3)."""
    if length <= 0:
        return b""
    if is_s3(uri):
        s3, bucket, key = _object(uri, client)
        rng = f"bytes={offset}-{offset + length - 1}"
        return call(f"GET {uri} {rng}", lambda: whole_body(s3.get_object(Bucket=bucket, Key=key, Range=rng)))
    with open(uri, "rb") as fh:
        fh.seek(offset)
        return fh.read(length)


_CLIENT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION")


class RangeReader:
    """Many ranged reads in flight at once: a thread pool over one shared boto3 client.

    boto3 clients are thread-safe; the client's connection pool is sized to
    ``max_in_flight`` (botocore's default of 10 would cap the concurrency).
    The client is remade when the environment that configures it changes
    (``AWS_ENDPOINT_URL``, credentials, region), as a new one would see it.
    Local files are read in the calling thread (a read of a cached page takes
    microseconds, less than handing it to a thread). Results keep the order
    of the requests; the first failing read raises.
    """

    def __init__(self, max_in_flight: int = 32):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self._pool: ThreadPoolExecutor | None = None
        self._client = None
        self._env: tuple[str | None, ...] = ()
        self._lock = threading.Lock()

    def _start(self) -> tuple[ThreadPoolExecutor, Any]:
        """The pool, and a client made for the environment as it is now (endpoint, credentials, region)."""
        env = tuple(os.environ.get(name) for name in _CLIENT_ENV)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="range-read")
            if self._client is None or self._env != env:
                self._client, self._env = s3_client(self.max_in_flight), env
            return self._pool, self._client

    def read(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes]:
        """The bytes of each ``(uri, offset, length)``, in order."""
        if not any(is_s3(uri) for uri, _, _ in requests):
            return [read_range(uri, offset, length) for uri, offset, length in requests]
        pool, client = self._start()
        futures = [pool.submit(read_range, uri, offset, length, client) if is_s3(uri) else None
                   for uri, offset, length in requests]
        return [f.result() if f is not None else read_range(uri, offset, length)
                for f, (uri, offset, length) in zip(futures, requests)]

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = self._client = None

    def __getstate__(self) -> dict[str, Any]:  # pickled into Spark tasks: threads and clients stay behind
        return {"max_in_flight": self.max_in_flight}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_in_flight"])


def umask() -> int:
    """This process's umask, read without changing it where the kernel reports it (``/proc/self/status``)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it and put it back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_local(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path``; rename it over ``path`` only on success. A full disk is a
    :class:`~waveforms.runtime.errors.DiskFullError` naming ``path``, and leaves neither file behind."""
    path = Path(path)
    with disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, mode) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give the file ordinary permissions
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def write_bytes(uri: str, data: bytes, client=None) -> None:
    """Write a whole object atomically."""
    if is_s3(uri):
        s3, bucket, key = _object(uri, client)
        call(f"PUT {uri}", lambda: s3.put_object(Bucket=bucket, Key=key, Body=data))
        return
    with atomic_local(uri) as fh:
        fh.write(data)


def write_text(uri: str, text: str, client=None) -> None:
    write_bytes(uri, text.encode("utf-8"), client)


def upload_file(local: str | Path, uri: str, client=None, callback=None) -> None:
    """Copy a local file to ``uri`` (atomically for local targets).

    ``callback(n)``, when given, is called with each number of bytes copied.
    """
    if is_s3(uri):
        s3, bucket, key = _object(uri, client)
        call(f"upload of {local} to {uri}", lambda: s3.upload_file(str(local), bucket, key, Callback=callback))
        return
    _copy_local(local, uri, callback)


def _copy_local(src: str | Path, dest: str | Path, callback=None) -> None:
    """Copy local file ``src`` to ``dest`` atomically, calling ``callback(n)`` with each number of bytes copied."""
    with open(src, "rb") as fh, atomic_local(dest) as out:
        while chunk := fh.read(1 << 20):
            out.write(chunk)
            if callback:
                callback(len(chunk))


def download_file(uri: str, local: str | Path, client=None, callback=None) -> None:
    """Copy ``uri`` to a local file atomically (``callback`` as in :func:`upload_file`)."""
    if is_s3(uri):
        local = Path(local)
        tmp = local.with_name(f".{local.name}.part")
        with disk_full(local, f"downloading {uri} to"):
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(tmp, "wb") as fh:  # one resumable GET stream (s3transfer fails on a cut HEAD: no length)
                    for chunk in iter_bytes(uri, 8 << 20, client):
                        fh.write(chunk)
                        if callback:
                            callback(len(chunk))
                os.replace(tmp, local)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return
    _copy_local(uri, local, callback)


def list_files(uri: str, suffix: str = "", client=None) -> list[str]:
    """All files below ``uri`` (recursive), as full URIs or paths, sorted."""
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        keys = [obj["Key"] for obj in _listing(bucket, prefix, client) if obj["Key"].endswith(suffix)]
        return sorted(f"s3://{bucket}/{k}" for k in keys)
    root = Path(uri)
    if not root.exists():
        return []
    return sorted(str(p) for p in root.rglob(f"*{suffix}") if p.is_file())


def list_sizes(uri: str, client=None) -> dict[str, int]:
    """Every file below ``uri`` (recursive) with its size in bytes: one listing (S3: one per 1,000 keys)."""
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        return {f"s3://{bucket}/{obj['Key']}": int(obj["Size"]) for obj in _listing(bucket, prefix, client)}
    root = Path(uri)
    if not root.is_dir():
        return {}
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _listing(bucket: str, prefix: str, client=None) -> list[dict[str, Any]]:
    """Every object under ``prefix``, listed again from the start after a network fault."""
    s3 = client or s3_client()

    def pages() -> list[dict[str, Any]]:
        paginator = s3.get_paginator("list_objects_v2")
        return [obj for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for obj in page.get("Contents", [])]

    return call(f"LIST s3://{bucket}/{prefix}", pages)


def iter_bytes(uri: str, chunk_size: int = 1 << 20, client=None) -> Iterator[bytes]:
    """The bytes of ``uri`` in chunks, streamed (one GET on S3, resumed at the byte it reached after a
    network fault, and checked against the length S3 announced), for hashing and copying files of any size."""
    if is_s3(uri):
        s3, bucket, key = _object(uri, client)
        done, end = 0, -1
        chunks: Iterator[bytes] | None = None

        def next_chunk() -> bytes:
            nonlocal chunks, end
            try:
                if chunks is None:
                    extra = {"Range": f"bytes={done}-"} if done else {}
                    response = s3.get_object(Bucket=bucket, Key=key, **extra)
                    if response.get("ContentLength") is None:
                        raise http.client.IncompleteRead(b"", None)  # the headers were cut off
                    end = done + int(response["ContentLength"])
                    chunks = response["Body"].iter_chunks(chunk_size)
                chunk = next(chunks, b"")
                if not chunk and done < end:
                    raise http.client.IncompleteRead(b"", end - done)
                return chunk
            except BaseException:
                chunks = None  # the next attempt asks again from the byte reached
                raise

        while chunk := call(f"GET {uri} from byte {done}", next_chunk):
            done += len(chunk)
            yield chunk
        return
    with open(uri, "rb") as fh:
        while chunk := fh.read(chunk_size):
            yield chunk


def delete(uri: str, client=None) -> None:
    if is_s3(uri):
        s3, bucket, key = _object(uri, client)
        call(f"DELETE {uri}", lambda: s3.delete_object(Bucket=bucket, Key=key))
        return
    with contextlib.suppress(FileNotFoundError):
        Path(uri).unlink()


def local_size(uri: str) -> int:
    return Path(uri).stat().st_size


def delete_tree(uri: str, client=None) -> None:
    """Remove a file or a whole folder/prefix (no error when absent)."""
    if is_s3(uri):
        client = client or s3_client()
        for found in list_files(uri, client=client):
            delete(found, client)
        if exists(uri):
            delete(uri, client)
        return
    path = Path(uri)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local path holding the file ``uri``: the file itself, or a temporary download of an s3:// object."""
    if not is_s3(uri):
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="waveforms-in-") as tmp:
        local = Path(tmp, basename(uri) or "object")
        download_file(uri, local)
        yield local


class OutputDir:
    """A stage's output folder, local or ``s3://``, written through a local working copy.

    Stages write files under :attr:`local` and then call :meth:`upload` with the
    relative paths in commit order (the pointer or ``model.json`` last). For a
    local target the working copy *is* the target and uploads do nothing; for
    S3 it is a temporary folder, removed by :meth:`close`. Each S3 PUT is atomic,
    so a kill leaves every object either whole or absent.
    """

    def __init__(self, uri: str | Path):
        self.uri = str(uri)
        self.remote = is_s3(self.uri)
        self._tmp = tempfile.mkdtemp(prefix="waveforms-out-") if self.remote else None
        self.local = Path(self._tmp) if self._tmp else Path(self.uri)
        self._client = None

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client()
        return self._client

    def path(self, *parts: str) -> Path:
        return self.local.joinpath(*parts)

    def target(self, *parts: str) -> str:
        return join(self.uri, *parts)

    def _files(self, rel: str) -> list[str]:
        path = self.path(rel)
        if path.is_dir():
            return [p.relative_to(self.local).as_posix() for p in sorted(path.rglob("*")) if p.is_file()]
        return [rel] if path.is_file() else []

    def upload(self, *rels: str) -> None:
        """Copy files (or every file of folders) to the target, in the order given."""
        if not self.remote:
            return
        for rel in rels:
            for name in self._files(rel):
                upload_file(self.path(name), self.target(name), self.client)

    def download(self, *rels: str) -> list[str]:
        """Fetch files from the target into the working copy; returns those that existed."""
        if not self.remote:
            return [rel for rel in rels if self.path(rel).exists()]
        found = []
        for rel in rels:
            if exists(self.target(rel)):
                download_file(self.target(rel), self.path(rel), self.client)
                found.append(rel)
        return found

    def remove(self, *rels: str) -> None:
        """Delete files or folders both in the working copy and at the target."""
        for rel in rels:
            delete_tree(str(self.path(rel)))
            if self.remote:
                delete_tree(self.target(rel), self.client)

    def listdir(self, rel: str) -> list[str]:
        """Immediate children (names) of folder ``rel`` at the target."""
        if not self.remote:
            folder = self.path(rel)
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        prefix = self.target(rel).rstrip("/") + "/"
        return sorted({f[len(prefix):].split("/", 1)[0] for f in list_files(prefix, client=self.client)})

    def remove_except(self, rel: str, keep: Iterable[str]) -> None:
        """Remove every child of folder ``rel`` (working copy and target) not named in ``keep``."""
        keep = set(keep)
        local = self.path(rel)
        names = set(self.listdir(rel)) | ({p.name for p in local.iterdir()} if local.is_dir() else set())
        self.remove(*(f"{rel}/{name}" for name in sorted(names - keep)))
