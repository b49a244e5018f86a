"""The scrape output's ``manifest.jsonl`` and ``errors.jsonl``, local or on S3.

Locally each record is appended as one whole line (:func:`waveforms.storage.jsonl.append`);
a last line cut short by a kill is dropped (and the file rewritten clean) when
the manifest is next loaded. On S3 the whole object is
rewritten (``write_text``) at most every few seconds and at the end.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from waveforms import storage
from waveforms.storage import jsonl
from waveforms.storage.tracks import ERRORS, MANIFEST, track_id, upgraded

log = logging.getLogger(__name__)

__all__ = ["ERRORS", "MANIFEST", "FIELDS", "JsonLines", "Manifest", "record"]

FIELDS = (
    "id", "title", "artist", "album", "genre", "licence", "page_url", "file_url",
    "path", "size", "sha256", "source",
)


class JsonLines:
    """An append-only JSON-lines file under an output root."""

    def __init__(self, uri: str, flush_every_s: float = 5.0):
        self.uri = uri
        self.s3 = storage.is_s3(uri)
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._dirty = False
        self._last_flush = time.monotonic()
        self.flush_every_s = flush_every_s

    def load(self) -> list[dict[str, Any]]:
        """Read what is there; repair a file with a cut or broken line."""
        if not storage.exists(self.uri):
            return []
        text = storage.read_text(self.uri)
        complete, torn = jsonl.split_torn(text)
        self.rows = jsonl.parse(complete, self.uri)
        if text != complete:
            if torn:
                log.warning("%s: dropped a last line cut short by an interrupted write", self.uri)
            storage.write_text(self.uri, jsonl.dumps(self.rows, sort_keys=False))
        return self.rows

    def append(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.rows.append(row)
            if self.s3:
                self._dirty = True
                if time.monotonic() - self._last_flush >= self.flush_every_s:
                    self._flush_locked()
                return
            jsonl.append(self.uri, row, sort_keys=False)

    def _flush_locked(self) -> None:
        storage.write_text(self.uri, jsonl.dumps(self.rows, sort_keys=False))
        self._dirty = False
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            if self._dirty:
                self._flush_locked()


class Manifest(JsonLines):
    """Manifest records keyed by track id; later records win. Rows of an earlier run are read under
    today's key names (:func:`waveforms.storage.tracks.upgraded`)."""

    def __init__(self, root: str):
        super().__init__(storage.join(root, MANIFEST))
        self.by_id: dict[str, dict[str, Any]] = {}

    def load(self) -> list[dict[str, Any]]:
        rows = self.rows = [upgraded(r) for r in super().load()]
        self.by_id = {str(r.get("id")): r for r in rows if "id" in r}
        return rows

    def append(self, row: dict[str, Any]) -> None:
        super().append(row)
        with self._lock:
            self.by_id[str(row["id"])] = row

    def compact(self) -> None:
        """Rewrite the file with one line per id (the latest) if any id repeats."""
        with self._lock:
            if len(self.by_id) == len(self.rows):
                return
            latest = {str(r["id"]): r for r in self.rows}
            self.rows = list(latest.values())
            storage.write_text(self.uri, jsonl.dumps(self.rows, sort_keys=False))
            self._dirty = False

    def get(self, track_id: Any) -> dict[str, Any] | None:
        with self._lock:
            return self.by_id.get(str(track_id))


def record(**values: Any) -> dict[str, Any]:
    """A manifest record with every field present, in a stable order."""
    unknown = set(values) - set(FIELDS)
    extra = {k: values[k] for k in sorted(unknown)}
    return {**{k: values.get(k) for k in FIELDS}, **extra, "id": track_id(values["id"])}
