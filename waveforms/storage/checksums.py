"""Size and SHA-256 records of files (local or ``s3://``), and what is wrong with a file that has one.

A record is ``{"size": bytes, "sha256": hex digest}``; the artefact that owns
the file stores it (a dataset's manifest, ``model.json``, a checkpoint's
``state.json``), written after the file itself.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from waveforms import storage

CHUNK = 1 << 20


def digest(uri: str | Path, algorithm: str = "sha256", client=None) -> str:
    """The hex digest (a :mod:`hashlib` algorithm) of a file or S3 object, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    for chunk in storage.iter_bytes(str(uri), CHUNK, client):
        h.update(chunk)
    return h.hexdigest()


def sha256(uri: str | Path, client=None) -> str:
    """The SHA-256 of a file or S3 object."""
    return digest(uri, "sha256", client)


def record(path: str | Path) -> dict[str, Any]:
    """``{"size", "sha256"}`` of a local file."""
    return {"size": Path(path).stat().st_size, "sha256": sha256(path)}


def size_problem(size: int | None, expected: dict[str, Any], what: str = "the record") -> str | None:
    """Why a file of ``size`` bytes (None: absent) does not match ``expected``, or None when it does."""
    if size is None:
        return "missing"
    want = expected.get("size")
    if want is not None and int(want) != size:
        return f"{size} bytes, {what} says {int(want)}"
    return None


def problem(path: str | Path, expected: dict[str, Any], what: str = "the record", size: int | None = -1,
            client=None) -> str | None:
    """Why ``path`` does not match ``expected`` (size first, then SHA-256), or None when it does.

    ``size``: the file's size when already known from a listing (None: absent); by default a local stat.
    """
    uri = str(path)
    if size == -1:
        size = Path(uri).stat().st_size if Path(uri).is_file() else None
    found = size_problem(size, expected, what)
    if found or not expected.get("sha256"):
        return found
    if sha256(uri, client) != expected["sha256"]:
        return f"its SHA-256 differs from the one {what} holds (the bytes are corrupt)"
    return None
