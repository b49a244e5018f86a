"""What every route shares: the catalog of the roots, loaded models, limits, uploads."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request

from waveforms import storage
from waveforms.config import ServeConfig
from waveforms.dataset import Dataset, DatasetError
from waveforms.serve.discovery import Catalog, Entry
from waveforms.serve.generation import Limiter, Models, Results
from waveforms.storage import jsonl
from waveforms.storage.versions import NewerFormat

log = logging.getLogger(__name__)


@dataclass
class Studio:
    cfg: ServeConfig
    catalog: Catalog
    models: Models
    limiter: Limiter
    results: Results
    upload_dir: str
    _datasets: dict[str, tuple[Any, float, Dataset]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_config(cls, cfg: ServeConfig) -> "Studio":
        upload = cfg.upload_dir or os.path.join(tempfile.gettempdir(), f"waveforms-studio-{os.getuid()}")
        os.makedirs(os.path.join(upload, "primes"), exist_ok=True)
        limit = cfg.max_generations or os.cpu_count() or 1
        return cls(cfg, Catalog(cfg.roots, cfg.rescan_s), Models(cfg.model_cache), Limiter(limit), Results(),
                   os.path.abspath(upload))

    def entry(self, kind: str, entry_id: str) -> Entry:
        e = self.catalog.get(kind, entry_id)
        if e is None:
            raise HTTPException(404, f"no {kind} with id {entry_id!r}")
        return e

    def dataset(self, entry: Entry) -> Dataset:
        """The opened dataset, cached until its manifest changes (local) or for a few seconds (S3)."""
        uri = entry.file("manifest.jsonl")
        stamp: Any = _stamp(uri)
        with self._lock:
            hit = self._datasets.get(entry.id)
            if hit and hit[0] == stamp and (stamp is not None or time.monotonic() - hit[1] < 5):
                return hit[2]
        try:
            ds = Dataset.open(entry.uri)
        except (DatasetError, NewerFormat) as exc:
            raise HTTPException(404, str(exc)) from exc
        with self._lock:
            self._datasets[entry.id] = (stamp, time.monotonic(), ds)
        return ds

    def dataset_by_source_id(self, dataset_id: str) -> Entry | None:
        """The served dataset whose transform id is ``dataset_id`` (a model's training data)."""
        for e in self.catalog.list("dataset"):
            summary = read_json(e.file("dataset.json")) or {}
            if dataset_id and summary.get("dataset_id") == dataset_id:
                return e
        return None


def _stamp(path: str) -> tuple[int, int] | None:
    if storage.is_s3(path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


def studio(request: Request) -> Studio:
    return request.app.state.studio


def _absent(exc: BaseException) -> bool:
    """Whether ``exc`` says only that the file does not exist (locally or on S3)."""
    if isinstance(exc, FileNotFoundError):
        return True
    response = getattr(exc, "response", None)  # botocore's ClientError
    code = response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
    return str(code) in ("NoSuchKey", "404")


def _skipped(uri: str, exc: BaseException) -> None:
    """Log a file the studio leaves out: absent at debug level, anything else as a warning."""
    if _absent(exc):
        log.debug("skipped %s: absent", uri)
    else:
        log.warning("skipped %s: %s: %s", uri, type(exc).__name__, exc)


def read_json(uri: str) -> Any | None:
    """A JSON file's contents, or None when it is absent or unreadable (logged: :func:`_skipped`)."""
    try:
        return json.loads(storage.read_text(uri))
    except Exception as exc:  # absent, unreadable, or an S3 error: the studio shows what it can
        _skipped(uri, exc)
        return None


def read_rows(uri: str) -> list[dict[str, Any]]:
    """A JSON Lines file's rows (a torn last line dropped); empty when absent or unreadable (logged)."""
    try:
        return jsonl.parse(storage.read_text(uri), uri)
    except Exception as exc:  # as read_json
        _skipped(uri, exc)
        return []
