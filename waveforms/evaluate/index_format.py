"""The index's files and manifest: names, versions, and reading them back (one place for both readers).

Layout, beside the dataset (``DATASET/index/`` by default, local or ``s3://``)::

    pca-RUN.npz       the feature standardisation and PCA (fitted once, kept by later runs)
    index-RUN.faiss   the FAISS index; label i is row i of the map
    map-RUN.npz       per vector: ``track`` (position in index.json's tracks) and ``offset_s``
    index.json        the manifest, written last: the commit point
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from waveforms import storage
from waveforms.evaluate import ann
from waveforms.evaluate.embed import Projection
from waveforms.storage import versions

INDEX_DIR = "index"
MANIFEST = "index.json"
FORMAT = "waveforms-index"
FORMAT_VERSION = 2
TRACK_KEYS = ("id", "shard", "offset", "num_samples")
META_KEYS = ("title", "artist", "licence")
RUN_FILES = ("pca", "index", "map")  # NAME-RUNID.EXT: one of each per run, named by the manifest


def index_uri(data: str, output: str = "") -> str:
    return output or storage.join(data, INDEX_DIR)


def read_manifest(uri: str) -> dict[str, Any] | None:
    """The committed ``index.json`` under ``uri``, or None; :class:`~waveforms.storage.versions.NewerFormat` when a
    newer waveforms wrote it."""
    path = storage.join(uri, MANIFEST)
    if not storage.exists(path):
        return None
    manifest = json.loads(storage.read_text(path))
    versions.check(manifest, path, FORMAT_VERSION)
    return manifest


@dataclass
class Parts:
    """The files a manifest names, read back: the projection, the FAISS index and the map's two columns."""

    projection: Projection
    index: Any
    track: np.ndarray
    offset_s: np.ndarray


def read_parts(uri: str, manifest: dict[str, Any], client=None) -> Parts:
    files = manifest["files"]
    projection = Projection.from_bytes(storage.read_bytes(storage.join(uri, files["pca"]), client))
    index = ann.from_bytes(storage.read_bytes(storage.join(uri, files["index"]), client))
    with np.load(io.BytesIO(storage.read_bytes(storage.join(uri, files["map"]), client))) as z:
        return Parts(projection, index, z["track"], z["offset_s"])
