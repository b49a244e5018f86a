"""Find datasets, models and generated WAVs under the studio's roots; give each an opaque id.

A *dataset* is a folder holding ``manifest.jsonl`` and ``dataset.json``; a
*model* a folder holding ``model.json`` (trained) or ``metrics.jsonl`` (still
training); a *generated* WAV a ``*.wav`` with its ``*.wav.json`` sidecar (outside
model folders). Ids are digests of the root and the relative path: URLs never
carry a path, and anything that is not an id from the last scan is unknown (404).

Local scans never follow a symlinked folder, and skip any file whose real path
leaves its root.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from waveforms import storage
from waveforms.storage.tracks import MANIFEST

DATASET_MARK = "dataset.json"
MODEL_MARKS = ("model.json", "metrics.jsonl")
SIDECAR = ".json"


@dataclass(frozen=True)
class Entry:
    """One thing the studio serves: its kind, opaque id and location (a local path or s3:// URI)."""

    kind: str  # dataset | model | generated
    id: str
    root: str
    rel: str  # path relative to the root ("." for the root itself)
    uri: str

    def file(self, *parts: str) -> str:
        """A file inside this entry's folder (the caller passes fixed names, never user text)."""
        return storage.join(self.uri, *parts)


def make_id(kind: str, root: str, rel: str) -> str:
    return hashlib.sha256(f"{kind}\0{root}\0{rel}".encode()).hexdigest()[:16]


@dataclass
class Scan:
    entries: dict[str, Entry] = field(default_factory=dict)
    at: float = 0.0

    def of(self, kind: str) -> list[Entry]:
        return sorted((e for e in self.entries.values() if e.kind == kind), key=lambda e: (e.root, e.rel))


def _inside(path: str, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def local_files(root: str) -> list[str]:
    """Files below ``root`` (relative, '/'-separated), symlinked folders not followed, escapes skipped."""
    root_real = os.path.realpath(root)
    out = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(folder, d)))
        for name in files:
            path = os.path.join(folder, name)
            if _inside(path, root_real):
                out.append(Path(os.path.relpath(path, root)).as_posix())
    return sorted(out)


def root_files(root: str) -> list[str]:
    """Every file below a root, relative to it (local or s3://)."""
    if storage.is_s3(root):
        prefix = root.rstrip("/") + "/"
        return [uri[len(prefix):] for uri in storage.list_files(root) if uri.startswith(prefix)]
    return local_files(root) if os.path.isdir(root) else []


def _parent(rel: str) -> str:
    head, _, _ = rel.rpartition("/")
    return head or "."


def classify(root: str, files: Iterable[str]) -> list[Entry]:
    """The entries one root's file list holds."""
    files = list(files)
    by_folder: dict[str, set[str]] = {}
    for rel in files:
        by_folder.setdefault(_parent(rel), set()).add(rel.rpartition("/")[2])
    out: list[Entry] = []
    model_dirs: list[str] = []
    for folder, names in sorted(by_folder.items()):
        uri = root if folder == "." else storage.join(root, folder)
        if MANIFEST in names and DATASET_MARK in names:
            out.append(Entry("dataset", make_id("dataset", root, folder), root, folder, uri))
        if any(m in names for m in MODEL_MARKS) and not any(folder.startswith(d + "/") for d in model_dirs):
            model_dirs.append(folder)
            out.append(Entry("model", make_id("model", root, folder), root, folder, uri))
    in_model = lambda rel: any(d == "." or rel.startswith(d + "/") for d in model_dirs)  # noqa: E731
    present = set(files)
    for rel in files:
        if rel.endswith(".wav") and rel + SIDECAR in present and not in_model(rel):
            out.append(Entry("generated", make_id("generated", root, rel), root, rel, storage.join(root, rel)))
    return out


class Catalog:
    """The roots' entries, rescanned at most every ``rescan_s`` seconds (and on an unknown id)."""

    def __init__(self, roots: list[str], rescan_s: float = 2.0):
        self.roots = [r if storage.is_s3(r) else os.path.abspath(r) for r in roots]
        self.rescan_s = rescan_s
        self._scan = Scan()
        self._lock = threading.Lock()

    def scan(self, force: bool = False) -> Scan:
        with self._lock:
            if force or time.monotonic() - self._scan.at >= self.rescan_s or not self._scan.at:
                entries: dict[str, Entry] = {}
                for root in self.roots:
                    for e in classify(root, root_files(root)):
                        entries[e.id] = e
                self._scan = Scan(entries, time.monotonic())
            return self._scan

    def list(self, kind: str) -> list[Entry]:
        return self.scan().of(kind)

    def get(self, kind: str, entry_id: str) -> Entry | None:
        """The entry with this id and kind, or None (ids never name paths)."""
        if not (len(entry_id) == 16 and all(c in "0123456789abcdef" for c in entry_id)):
            return None
        e = self.scan().entries.get(entry_id)
        if e is None:
            e = self.scan(force=time.monotonic() - self._scan.at > 0.2).entries.get(entry_id)
        return e if e is not None and e.kind == kind else None

    def files(self, entry: Entry, sub: str, suffix: str) -> list[str]:
        """Names of the files in ``entry``'s folder ``sub`` ending in ``suffix`` (escapes skipped)."""
        folder = entry.file(sub)
        if storage.is_s3(folder):
            prefix = folder.rstrip("/") + "/"
            names = [u[len(prefix):] for u in storage.list_files(folder, suffix)]
            return sorted(n for n in names if "/" not in n)
        if not os.path.isdir(folder) or os.path.islink(folder):
            return []
        root_real = os.path.realpath(entry.root)
        return sorted(n for n in os.listdir(folder) if n.endswith(suffix) and not n.startswith(".")
                      and os.path.isfile(os.path.join(folder, n)) and _inside(os.path.join(folder, n), root_real))
