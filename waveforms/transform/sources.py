"""What to transform: records (id, location, size, metadata) from a folder, a manifest or S3.

A scrape output (folder or ``s3://`` prefix with ``manifest.jsonl``) gives ids,
genres and licences; a bare folder or prefix of audio files gets ids from file
names. Records are small: audio bytes never pass through the driver.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from waveforms import storage
from waveforms.runtime.errors import UserError
from waveforms.storage import jsonl
from waveforms.storage.tracks import MANIFEST, ids_for_paths, track_id, upgraded

AUDIO_SUFFIXES = (".mp3", ".ogg", ".oga", ".flac", ".wav", ".m4a", ".opus")
META_KEYS = ("title", "artist", "album", "genre", "licence", "source", "split", "sha256")


def _from_manifest(root: str, text: str) -> list[dict[str, Any]]:
    records = []
    for row in map(upgraded, jsonl.parse(text, storage.join(root, MANIFEST), ("id", "path"))):
        rec = {k: row[k] for k in META_KEYS if row.get(k) not in (None, "")}
        rec.update(id=track_id(row["id"]), uri=storage.join(root, row["path"]), size=int(row.get("size") or 0))
        records.append(rec)
    return records


def list_inputs(uri: str) -> list[dict[str, Any]]:
    """Records for every input track, sorted by id; later manifest lines win for a repeated id."""
    root = uri
    if uri.endswith(MANIFEST):
        root = uri.rsplit("/", 1)[0] if storage.is_s3(uri) else str(Path(uri).parent)
    manifest = storage.join(root, MANIFEST)
    if storage.exists(manifest):
        records = _from_manifest(root, storage.read_text(manifest))
    else:
        if not storage.is_s3(root) and not os.path.isdir(root):
            raise UserError(f"input not found: {uri}")
        files = [f for f in storage.list_files(root) if f.lower().endswith(AUDIO_SUFFIXES)]
        prefix = root.rstrip("/") + "/"
        rel = {f: f[len(prefix):] if f.startswith(prefix) else f for f in files}
        ids = ids_for_paths(rel.values())
        records = [
            {"id": ids[rel[f]], "uri": f, "size": 0 if storage.is_s3(f) else storage.local_size(f), "source": "dir"}
            for f in files
        ]
    by_id = {r["id"]: r for r in records}
    if not by_id:
        raise UserError(f"no audio found in {uri}")
    return [by_id[k] for k in sorted(by_id)]
