"""A bounded cache of an s3:// dataset's shards on the node's disk, filled on first read, kept across runs.

Layout: ``FOLDER/<dataset id>/<shard path>`` (the shard path as in the
manifest). A cached file counts only if its size equals the object's size in
S3 (one LIST of ``shards/`` when the cache opens) and it sits under the
dataset id of the manifest, which is a digest of the transform settings and
inputs: a rewritten dataset has a new id, so stale shards are never read.

The first read of a shard that is not cached starts its download on one
background thread (one shard at a time, so window reads keep the bandwidth)
and is served by ranged reads meanwhile; later reads of that shard are local.
Downloads go to a temporary name in the same folder and are renamed when
whole, so a kill, or another process filling the same cache, never leaves a
partial file under a shard's name. Before a download the least recently used
files (by modification time, which a cache hit refreshes once per process)
are removed until the cache, all datasets together, fits ``max_bytes``; a shard
bigger than ``max_bytes`` is never cached.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from waveforms import storage
from waveforms.runtime.errors import free_space, is_disk_full

log = logging.getLogger(__name__)

PART = ".part"


def default_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "waveforms", "shards")


class ShardCache:
    """The cache of one opened s3:// dataset (``root``, ``dataset_id``) in ``folder``, at most ``max_bytes``."""

    def __init__(self, root: str, dataset_id: str, folder: str | Path, max_bytes: int):
        if not storage.is_s3(root):
            raise ValueError(f"the shard cache is for s3:// datasets, not {root}")
        self.root = root.rstrip("/")
        self.folder = Path(folder)
        self.base = self.folder / (dataset_id or "no-dataset-id")
        self.max_bytes = int(max_bytes)
        self._sizes = storage.list_sizes(storage.join(self.root, "shards"))
        self._ready: set[str] = set()  # shard URIs known to be cached whole (touched once)
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shard-cache")
        self.hits = self.misses = 0
        self.full = False  # the disk filled up: no more downloads this run (the cache is only an optimisation)

    def local_path(self, uri: str) -> Path:
        return self.base / uri[len(self.root) + 1:]

    def lookup(self, uri: str) -> str | None:
        """The local copy of shard ``uri`` if it is cached whole; else None, and its download is queued."""
        with self._lock:
            if uri in self._ready:
                self.hits += 1
                return str(self.local_path(uri))
            size = self._sizes.get(uri)
            path = self.local_path(uri)
            if size is not None and _size(path) == size:
                with contextlib.suppress(OSError):
                    os.utime(path)  # recently used
                self._ready.add(uri)
                self.hits += 1
                return str(path)
            self.misses += 1
            if size is not None and size <= self.max_bytes and uri not in self._queued and not self.full:
                self._queued.add(uri)
                self._pool.submit(self._fill, uri, size)
            return None

    def _fill(self, uri: str, size: int) -> None:
        if self.full:
            return
        path = self.local_path(uri)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._make_room(size)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART, dir=path.parent)
            os.close(fd)
            try:
                with open(tmp, "wb") as fh:  # storage's resumable, retried GET stream
                    for chunk in storage.iter_bytes(uri, 8 << 20):
                        fh.write(chunk)
                if _size(Path(tmp)) != size:
                    raise OSError(f"downloaded {_size(Path(tmp))} of {size} bytes")
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            with self._lock:
                self._ready.add(uri)
        except Exception as exc:  # the feed goes on with ranged reads
            if not is_disk_full(exc):
                log.warning("could not cache %s: %s", uri, exc)
            elif not self.full:
                self.full = True
                log.warning("the shard cache's disk is full (%s, %s): shards not cached yet are read from S3 with "
                            "ranged reads for the rest of this run", self.folder, free_space(self.folder))

    def _make_room(self, size: int) -> None:
        files = [(p.stat().st_mtime, p.stat().st_size, p) for p in self.folder.rglob("*")
                 if p.is_file() and not p.name.endswith(PART)]
        total = sum(s for _, s, _ in files)
        with self._lock:
            mine = {self.local_path(u) for u in self._ready}
        for _, s, p in sorted(files, key=lambda f: f[0]):
            if total + size <= self.max_bytes:
                break
            if p in mine:
                continue  # in use by this process: evicting it would only download it again
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            total -= s
        if total + size > self.max_bytes:
            raise OSError(f"no room for {size} bytes within {self.max_bytes} (the shards this run uses fill it)")

    def wait(self) -> None:
        """Block until queued downloads are done (tests, benchmarks)."""
        self._pool.submit(lambda: None).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def open_cache(ds, folder: str | Path | None, max_gb: float) -> ShardCache | None:
    """The shard cache of dataset ``ds`` (a :class:`waveforms.dataset.Dataset`); None when ``max_gb`` is 0
    or the dataset is not on S3. ``folder``: empty for :func:`default_folder`."""
    if max_gb <= 0 or not storage.is_s3(ds.root):
        return None
    return ShardCache(ds.root, ds.dataset_id, folder or default_folder(), int(max_gb * 1e9))


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None

