"""What every stage agrees on about tracks: their ids, file names and the manifest files.

A track id is a string of letters, digits, ``_``, ``.`` and ``-``. An FMA track
keeps its FMA number (``"2"``, ``"140"``); a file found in a folder takes its
path without the suffix, other characters replaced by ``_`` (``"Album/Song 1.mp3"``
becomes ``"Album_Song_1"``), so the scrape stage's ``dir`` source and a transform
of the same folder give the same track the same id.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable

from waveforms.storage import versions

MANIFEST = "manifest.jsonl"  # one JSON object per track (scrape output and dataset)
ERRORS = "errors.jsonl"  # inputs set aside, each with a reason
RENAMED = {"bytes": "size"}  # a scrape manifest row's file size, as rows written before ``size`` name it

_SAFE = re.compile(r"[\w.-]+")
_UNSAFE = re.compile(r"[^\w.-]+")


def track_id(value: int | str) -> str:
    """``value`` as a track id; ``ValueError`` for anything that could escape a folder."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"track id must be a string or an integer, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"track id must not be negative, got {value}")
        return str(value)
    if not _SAFE.fullmatch(value) or value.strip(".") == "" or value.startswith(("-", ".")):
        raise ValueError(f"track id must be letters, digits, '_', '.' or '-', got {value!r}")
    return value


def upgraded(row: dict[str, Any]) -> dict[str, Any]:
    """A scrape manifest row under today's key names (``size``, not ``bytes``)."""
    return versions.renamed(row, RENAMED)


def id_from_path(relpath: str) -> str:
    """A track id from a file's path relative to its folder (letters of any script kept)."""
    stem = relpath.rsplit(".", 1)[0] if "." in relpath.rsplit("/", 1)[-1] else relpath
    return _UNSAFE.sub("_", stem).strip("_.-") or "track"


def ids_for_paths(relpaths: Iterable[str]) -> dict[str, str]:
    """Relative path -> unique track id; a clash ("a b.mp3", "a_b.mp3") gets a hash of its path."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for rel in sorted(relpaths):
        tid = id_from_path(rel)
        if tid in taken:
            tid += "-" + hashlib.sha1(rel.encode()).hexdigest()[:8]
        taken.add(tid)
        out[rel] = tid
    return out


def track_relpath(value: int | str) -> str:
    """The only way a stored track's file name is made: from its id, never from page text.

    FMA numbers are zero-padded to six digits (``tracks/000002.mp3``).
    """
    tid = track_id(value)
    return f"tracks/{int(tid):06d}.mp3" if tid.isdigit() else f"tracks/{tid}.mp3"
