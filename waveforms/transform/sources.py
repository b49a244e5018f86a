"""What to transform: records (id, location, size, metadata) from a folder, a manifest or S3.

A scrape output (folder or ``s3://`` prefix with ``manifest.jsonl``) gives ids,
genres and licences; a bare folder or prefix of audio files gets ids from file
names. Records are small: audio bytes never pass through the driver.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from waveforms import jsonl, storage
from waveforms.errors import UserError

AUDIO_SUFFIXES = (".mp3", ".ogg", ".oga", ".flac", ".wav", ".m4a", ".opus")
META_KEYS = ("title", "artist", "album", "genre", "licence", "source", "split", "sha256")


def _id_from_name(rel: str) -> str:
    """A file-system-safe id from a relative path (letters of any script kept)."""
    stem = rel.rsplit(".", 1)[0]
    return re.sub(r"[^\w.-]+", "_", stem).strip("_.") or "track"


def _from_manifest(root: str, text: str) -> list[dict[str, Any]]:
    records = []
    for row in jsonl.parse(text, f"{root}/manifest.jsonl", ("id", "path")):
        rec = {k: row[k] for k in META_KEYS if row.get(k) not in (None, "")}
        rec.update(id=str(row["id"]), uri=storage.join(root, row["path"]), size=int(row.get("bytes") or 0))
        records.append(rec)
    return records


def list_inputs(uri: str) -> list[dict[str, Any]]:
    """Records for every input track, sorted by id; later manifest lines win for a repeated id."""
    root = uri
    if uri.endswith("manifest.jsonl"):
        root = uri.rsplit("/", 1)[0] if storage.is_s3(uri) else str(Path(uri).parent)
    manifest = storage.join(root, "manifest.jsonl")
    if storage.exists(manifest):
        records = _from_manifest(root, storage.read_text(manifest))
    else:
        if not storage.is_s3(root) and not os.path.isdir(root):
            raise UserError(f"input not found: {uri}")
        files = [f for f in storage.list_files(root) if f.lower().endswith(AUDIO_SUFFIXES)]
        prefix = root.rstrip("/") + "/"
        records, taken = [], set()
        for f in files:
            rel = f[len(prefix):] if f.startswith(prefix) else f
            track_id = _id_from_name(rel)
            if track_id in taken:  # "a b.mp3" and "a_b.mp3": keep both
                track_id += "-" + hashlib.sha1(rel.encode()).hexdigest()[:8]
            taken.add(track_id)
            size = 0 if storage.is_s3(f) else storage.local_size(f)
            records.append({"id": track_id, "uri": f, "size": size, "source": "dir"})
    by_id = {r["id"]: r for r in records}
    if not by_id:
        raise UserError(f"no audio found in {uri}")
    return [by_id[k] for k in sorted(by_id)]
