"""The transformed dataset on disk or S3, and how to read it without Spark.

Layout (one folder or ``s3://`` prefix)::

    manifest.jsonl    one JSON object per track; written last, atomically: the commit point
    shards/*.u8       mu-law codes, 1 byte per sample, tracks back to back
    dataset.json      summary: dataset id, sample rate, mu, settings, counts
    errors.jsonl      inputs set aside, with the reason
    config.json       the transform config used

Each manifest line holds at least ``id``, ``shard`` (path relative to the
dataset root), ``offset`` and ``num_samples`` (bytes within the shard),
``sample_rate``, ``mu``, ``duration_s``, ``split`` (``train``/``val``) and
``dataset_id``; plus ``genre``, ``licence``, ``source`` and other metadata.
A window of any track is one ranged read of its shard.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from waveforms import jsonl, storage
from waveforms.dataset.cache import ShardCache
from waveforms.errors import UserError
from waveforms.tracks import MANIFEST

SUMMARY = "dataset.json"
SHARDS = "shards"
REQUIRED = ("id", "shard", "offset", "num_samples", "sample_rate")


class DatasetError(UserError):
    """A dataset that is missing, incomplete or malformed."""


def split_for(track_id: str, val_fraction: float) -> str:
    """Deterministic train/val split from the track id alone."""
    h = int.from_bytes(hashlib.sha256(str(track_id).encode()).digest()[:8], "big")
    return "val" if (h / 2**64) < val_fraction else "train"


def parse_manifest(text: str, where: str = MANIFEST) -> list[dict[str, Any]]:
    return jsonl.parse(text, where, REQUIRED, DatasetError)


def manifest_text(tracks: list[dict[str, Any]]) -> str:
    return jsonl.dumps(tracks)


@dataclass
class Dataset:
    """An opened dataset: its root and its tracks (manifest rows)."""

    root: str
    tracks: list[dict[str, Any]]

    @classmethod
    def open(cls, root: str) -> "Dataset":
        uri = storage.join(root, MANIFEST)
        try:
            text = storage.read_text(uri)
        except FileNotFoundError as exc:
            raise DatasetError(f"no dataset at {root} ({MANIFEST} not found)") from exc
        except Exception as exc:  # botocore errors on S3
            if storage.is_s3(root):
                raise DatasetError(f"cannot read {uri}: {exc}") from exc
            raise
        tracks = parse_manifest(text, uri)
        if not tracks:
            raise DatasetError(f"dataset at {root} has no tracks")
        return cls(root=root, tracks=tracks)

    @property
    def sample_rate(self) -> int:
        return int(self.tracks[0]["sample_rate"])

    @property
    def mu(self) -> int:
        return int(self.tracks[0].get("mu", 255))

    @property
    def dataset_id(self) -> str:
        return str(self.tracks[0].get("dataset_id", ""))

    def transform_settings(self) -> dict[str, Any]:
        """The transform settings that made these codes (``dataset.json``'s), or {} when it has none."""
        import json

        uri = storage.join(self.root, SUMMARY)
        if not storage.exists(uri):
            return {}
        summary = json.loads(storage.read_text(uri))
        return dict(summary.get("settings") or {})

    def split(self, name: str) -> list[dict[str, Any]]:
        return [t for t in self.tracks if t.get("split", "train") == name]

    def shard_uri(self, track: dict[str, Any]) -> str:
        return storage.join(self.root, track["shard"])

    def read_window(self, track: dict[str, Any], start: int, length: int, client=None) -> np.ndarray:
        """``length`` codes of ``track`` from sample ``start`` (one ranged read)."""
        n = int(track["num_samples"])
        if start < 0 or start + length > n:
            raise DatasetError(f"window {start}+{length} outside track {track['id']} ({n} samples)")
        data = storage.read_range(self.shard_uri(track), int(track["offset"]) + start, length, client)
        return np.frombuffer(data, dtype=np.uint8)

    def read_windows(self, spans: Sequence[tuple[dict[str, Any], int, int]],
                     reader: storage.RangeReader | None = None, cache: ShardCache | None = None) -> list[np.ndarray]:
        """The codes of each ``(track, start, length)``, in order: one ranged read each, all in flight
        at once through ``reader`` (:class:`waveforms.storage.RangeReader`; a one-off one if None),
        from the local copy of the shard where ``cache`` (:mod:`waveforms.dataset.cache`) holds one.

        A read that returns fewer bytes than asked (a shard shorter than its
        manifest says) is a :class:`DatasetError` naming the track and shard.
        """
        requests = []
        for track, start, length in spans:
            n = int(track["num_samples"])
            if start < 0 or start + length > n:
                raise DatasetError(f"window {start}+{length} outside track {track['id']} ({n} samples)")
            uri = self.shard_uri(track)
            requests.append(((cache and cache.lookup(uri)) or uri, int(track["offset"]) + start, length))
        if reader is None:
            reader = storage.RangeReader()
            try:
                data = reader.read(requests)
            finally:
                reader.close()
        else:
            data = reader.read(requests)
        out = []
        for (track, start, length), got in zip(spans, data):
            if len(got) != length:
                raise DatasetError(f"short read: {len(got)} of {length} bytes of track {track['id']} at sample "
                                   f"{start} from shard {self.shard_uri(track)} (the shard is shorter than the "
                                   "manifest says)")
            out.append(np.frombuffer(got, dtype=np.uint8))
        return out

    def read_track(self, track: dict[str, Any], client=None) -> np.ndarray:
        return self.read_window(track, 0, int(track["num_samples"]), client)


def read_tracks(path: str) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
    """Yield ``(track_id, uint8 samples, metadata)`` for every track, without Spark."""
    ds = Dataset.open(path)
    client = storage.s3_client() if storage.is_s3(path) else None
    for track in ds.tracks:
        yield str(track["id"]), ds.read_track(track, client), dict(track)
