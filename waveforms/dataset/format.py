"""The transformed dataset on disk or S3, and how to read it without Spark.

Layout (one folder or ``s3://`` prefix)::

    manifest.jsonl    one JSON object per track; written last, atomically: the commit point
    shards/*.u8       mu-law codes, 1 byte per sample, tracks back to back
    dataset.json      summary: format_version, dataset id, sample rate, mu, settings, counts
    errors.jsonl      inputs set aside, with the reason
    config.json       the transform config used

Each manifest line holds at least ``id``, ``shard`` (path relative to the
dataset root), ``offset`` and ``num_samples`` (bytes within the shard),
``sample_rate``, ``mu``, ``duration_s``, ``split`` (``train``/``val``) and
``dataset_id``; plus ``genre``, ``licence``, ``source`` and other metadata,
and ``shard_size`` and ``shard_sha256``, the size and SHA-256 of its whole shard
(see :mod:`waveforms.dataset.integrity`; datasets written before them lack both).
A window of any track is one ranged read of its shard; opening a dataset checks
every shard's size with one listing, and a read that returns fewer bytes than
asked is a :class:`DatasetError` naming the track and shard. A dataset whose
``dataset.json`` records a newer ``format_version`` than this code knows is refused
(:class:`waveforms.storage.versions.NewerFormat`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from waveforms import storage
from waveforms.dataset import integrity
from waveforms.dataset.cache import ShardCache
from waveforms.runtime.errors import UserError
from waveforms.storage import jsonl, versions
from waveforms.storage.tracks import MANIFEST

log = logging.getLogger(__name__)

SUMMARY = "dataset.json"
FORMAT = "waveforms-dataset"
FORMAT_VERSION = 1
REPAIR = "copy the dataset again (waveforms aws sync) or transform it again; waveforms verify lists every damaged shard"
_NOTED: set[str] = set()  # roots whose missing hashes were already noted in this process
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
    def open(cls, root: str, check: bool = True) -> "Dataset":
        """Read the manifest; with ``check``, also every shard's size (one listing): DatasetError if one is short."""
        uri = storage.join(root, MANIFEST)
        client = storage.s3_client() if storage.is_s3(root) else None  # one for the manifest and the listing
        try:
            text = storage.read_text(uri, client)
        except FileNotFoundError as exc:
            raise DatasetError(f"no dataset at {root} ({MANIFEST} not found)") from exc
        except Exception as exc:  # botocore errors on S3
            if storage.is_s3(root):
                raise DatasetError(f"cannot read {uri}: {exc}") from exc
            raise
        tracks = parse_manifest(text, uri)
        if not tracks:
            raise DatasetError(f"dataset at {root} has no tracks")
        read_summary(root, client)
        if check:
            check_shards(root, tracks, client)
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
        return dict(read_summary(self.root).get("settings") or {})

    def split(self, name: str) -> list[dict[str, Any]]:
        return [t for t in self.tracks if t.get("split", "train") == name]

    def shard_uri(self, track: dict[str, Any]) -> str:
        return storage.join(self.root, track["shard"])

    def _locate(self, track: dict[str, Any], start: int, length: int) -> tuple[str, int, str]:
        """The shard URI, byte offset and a description of a window (DatasetError when it leaves its track)."""
        n = int(track["num_samples"])
        if start < 0 or start + length > n:
            raise DatasetError(f"window {start}+{length} outside track {track['id']} ({n} samples)")
        return self.shard_uri(track), int(track["offset"]) + start, f"track {track['id']} in shard {track['shard']}"

    def read_window(self, track: dict[str, Any], start: int, length: int, client=None) -> np.ndarray:
        """``length`` codes of ``track`` from sample ``start`` (one ranged read)."""
        uri, at, where = self._locate(track, start, length)
        try:
            data = storage.read_range(uri, at, length, client)
        except Exception as exc:
            if (err := read_failure(where, uri, at, length, exc)) is exc:
                raise
            raise err from exc
        return checked(where, uri, at, length, data)

    def read_windows(self, spans: Sequence[tuple[dict[str, Any], int, int]],
                     reader: storage.RangeReader | None = None, cache: ShardCache | None = None) -> list[np.ndarray]:
        """The codes of each ``(track, start, length)``, in order: one ranged read each, all in flight
        at once through ``reader`` (:class:`waveforms.storage.RangeReader`; a one-off one if None),
        from the local copy of the shard where ``cache`` (:mod:`waveforms.dataset.cache`) holds one.

        Failures are those of :meth:`read_window`: a missing shard or a read that
        returns fewer bytes than asked is a :class:`DatasetError` naming the track and shard.
        """
        located = [self._locate(track, start, length) for track, start, length in spans]
        requests = [((cache and cache.lookup(uri)) or uri, at, length)
                    for (uri, at, _), (_, _, length) in zip(located, spans)]
        own = reader is None
        reader = reader or storage.RangeReader()
        try:
            data = reader.read(requests)
        except Exception as exc:
            missing = getattr(exc, "filename", None)
            k = next((i for i, (uri, _, _) in enumerate(requests) if uri == missing), 0)
            if (err := read_failure(located[k][2], located[k][0], located[k][1], spans[k][2], exc)) is exc:
                raise
            raise err from exc
        finally:
            if own:
                reader.close()
        return [checked(where, uri, at, length, got)
                for (uri, at, where), (_, _, length), got in zip(located, spans, data)]

    def read_track(self, track: dict[str, Any], client=None) -> np.ndarray:
        return self.read_window(track, 0, int(track["num_samples"]), client)


def read_summary(root: str, client=None) -> dict[str, Any]:
    """The ``dataset.json`` of the dataset at ``root`` ({} when it has none); NewerFormat when a newer
    waveforms wrote it."""
    uri = storage.join(root, SUMMARY)
    if not storage.exists(uri):
        return {}
    summary = json.loads(storage.read_text(uri, client))
    versions.check(summary, uri, FORMAT_VERSION)
    return summary


def read_failure(where: str, uri: str, at: int, length: int, exc: Exception) -> Exception:
    """The DatasetError for a ranged read that failed because the shard is missing or short; else ``exc``."""
    if isinstance(exc, FileNotFoundError):
        return DatasetError(f"{where}: the shard is missing ({uri}); {REPAIR}")
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")  # botocore's ClientError on S3
    if code in ("NoSuchKey", "404", "InvalidRange", "416"):
        return DatasetError(f"{where}: cannot read bytes {at}..{at + length} of {uri} ({code}); {REPAIR}")
    return exc


def checked(where: str, uri: str, at: int, length: int, data: bytes) -> np.ndarray:
    """``data`` as codes, or a DatasetError when the read came back shorter than asked."""
    if len(data) != length:
        raise DatasetError(f"{where}: read {len(data)} of {length} bytes at byte {at} of {uri}: "
                           f"the shard is cut short; {REPAIR}")
    return np.frombuffer(data, dtype=np.uint8)


def check_shards(root: str, tracks: list[dict[str, Any]], client=None) -> None:
    """DatasetError naming each shard that is missing or of the wrong size, and a track in it (one listing)."""
    table, problems = integrity.shards(tracks)
    with storage.s3_failures(root, DatasetError, f"cannot list the shards of {root}"):
        sizes = integrity.listing(root, table, client)
    problems += integrity.size_problems(table, sizes).values()
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DatasetError(f"dataset at {root} is not whole: {'; '.join(problems[:3])}{more}; {REPAIR}")
    unhashed = integrity.unhashed(table)
    if unhashed and root not in _NOTED:
        _NOTED.add(root)
        log.warning("dataset at %s records no SHA-256 for %d of its %d shards (written before the transform "
                    "recorded them): their sizes are checked, their bytes cannot be verified by hash",
                    root, len(unhashed), len(table))


def read_tracks(path: str) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
    """Yield ``(track_id, uint8 samples, metadata)`` for every track, without Spark."""
    ds = Dataset.open(path)
    client = storage.s3_client() if storage.is_s3(path) else None
    for track in ds.tracks:
        yield str(track["id"]), ds.read_track(track, client), dict(track)
