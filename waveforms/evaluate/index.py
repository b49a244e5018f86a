"""The ``index`` stage (Spark): embed every training window, build the nearest-neighbour index.

Its files and manifest: :mod:`waveforms.evaluate.index_format`.

The first run fits the projection on a bounded sample of windows (one ranged read
per block of windows on the executors) and, once every vector is in the index,
calibrates the match threshold (:mod:`waveforms.evaluate.calibrate`).
Every run then embeds the tracks not yet indexed: executors read their tracks'
shards in blocks and send back only float32 vectors, which the driver adds to the
index partition by partition (``toLocalIterator``), so neither side holds audio
beyond one block. Tracks already indexed are not embedded again. ``index.json``
records the :class:`~waveforms.evaluate.embed.EmbeddingSpec`; a run with other
settings rebuilds the index.
"""
from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from waveforms import config as cfgmod
from waveforms import storage
from waveforms.dataset import Dataset
from waveforms.evaluate import ann
from waveforms.evaluate.calibrate import calibrate, summary
from waveforms.evaluate.embed import EmbeddingSpec, Projection, track_features, window_starts
from waveforms.evaluate.index_format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    META_KEYS,
    RUN_FILES,
    TRACK_KEYS,
    index_uri,
    read_manifest,
    read_parts,
)
from waveforms.evaluate.match import Matcher
from waveforms.runtime import progress, spark
from waveforms.runtime.errors import UserError
from waveforms.storage import runs, s3retry, versions

log = logging.getLogger(__name__)

def _fingerprint(t: dict[str, Any]) -> tuple:
    return tuple(str(t[k]) for k in TRACK_KEYS)


def spec_of(cfg: cfgmod.IndexConfig, sample_rate: int) -> EmbeddingSpec:
    """The embedding the settings ask for."""
    return EmbeddingSpec(sample_rate=sample_rate, window_s=cfg.window_s, hop_s=cfg.hop_s, n_mels=cfg.n_mels,
                         dims=cfg.dims)


def indexable(ds: Dataset, spec: EmbeddingSpec) -> list[dict[str, Any]]:
    """The training tracks holding at least one whole window, sorted by id."""
    return sorted((t for t in ds.split("train") if int(t["num_samples"]) >= spec.window), key=lambda t: str(t["id"]))


# --- executor side -----------------------------------------------------------------------------------------

def _reader(ds: Dataset, track: dict[str, Any], client):
    return lambda start, length: ds.read_window(track, start, length, client)


def sample_partition(items: Iterable[tuple[int, dict[str, Any], list[int]]], root: str, spec: dict[str, Any],
                     mu: int, outage_s: float = s3retry.OUTAGE_S) -> Iterator[tuple[int, bytes]]:
    """``(track position, float32 features)`` for the sampled windows of each track (S3 outages retried for
    ``outage_s``, the stage's ``s3_outage_s``)."""
    ds = Dataset(root, [])
    client = storage.s3_client() if storage.is_s3(root) else None
    es = EmbeddingSpec.from_dict(spec)
    with s3retry.bounded(outage_s):
        for pos, track, starts in items:
            feats = [f for _, f in track_features(_reader(ds, track, client), int(track["num_samples"]), es,
                                                  mu, np.asarray(starts))]
            yield pos, np.concatenate(feats).astype(np.float32).tobytes()


def embed_partition(items: Iterable[tuple[int, dict[str, Any]]], root: str, spec: dict[str, Any], mu: int,
                    proj: dict[str, np.ndarray], outage_s: float = s3retry.OUTAGE_S
                    ) -> Iterator[tuple[int, bytes, bytes]]:
    """``(track position, float32 offsets, float32 unit vectors)`` for every window of each track."""
    ds = Dataset(root, [])
    client = storage.s3_client() if storage.is_s3(root) else None
    projection, es = Projection(**proj), EmbeddingSpec.from_dict(spec)
    with s3retry.bounded(outage_s):
        for pos, track in items:
            offsets, vectors = [], []
            for off, feats in track_features(_reader(ds, track, client), int(track["num_samples"]), es, mu):
                offsets.append(off)
                vectors.append(projection(feats))
            yield pos, np.concatenate(offsets).tobytes(), np.concatenate(vectors).tobytes()


# --- driver side -------------------------------------------------------------------------------------------

def sample_starts(n_samples: int, spec: EmbeddingSpec, per_track: int) -> list[int]:
    """At most ``per_track`` window offsets spread evenly over a track (deterministic)."""
    starts = window_starts(n_samples, spec)
    if len(starts) <= per_track:
        return starts.tolist()
    return starts[np.linspace(0, len(starts) - 1, per_track).round().astype(int)].tolist()


@dataclass
class Built:
    manifest: dict[str, Any]
    uri: str


def _spark(cfg):
    return spark.stage_context(cfg.master, "waveforms-index", cfg.spark_conf)


def _partitions(sc, n: int, cfg) -> int:
    return max(1, min(n, cfg.partitions or 4 * sc.defaultParallelism))


def fit_projection(sc, ds: Dataset, tracks: list[dict[str, Any]], spec: EmbeddingSpec,
                   cfg) -> tuple[Projection, np.ndarray, np.ndarray]:
    """Fit the projection on a bounded sample; return it, the sample's unit vectors and their tracks."""
    per_track = max(1, math.ceil(cfg.sample_windows / len(tracks)))
    items = [(i, t, sample_starts(int(t["num_samples"]), spec, per_track)) for i, t in enumerate(tracks)]
    root, sd, mu, outage_s = ds.root, spec.to_dict(), ds.mu, cfg.s3_outage_s
    done = sc.accumulator(0)
    with progress.watching(progress.Progress("index: sampling", len(items), "tracks"), lambda: done.value):
        rows = sc.parallelize(items, _partitions(sc, len(items), cfg)).mapPartitions(
            lambda it: sample_partition(progress.counted(it, done), root, sd, mu, outage_s)).collect()
    n = spec.features
    feats = np.concatenate([np.frombuffer(b, np.float32).reshape(-1, n) for _, b in rows])
    owner = np.concatenate([np.full(len(b) // (4 * n), p) for p, b in rows])
    if spec.dims > n or len(feats) <= 2 * spec.dims:
        raise UserError(f"an embedding of {spec.dims} dims needs at most {n} dims (the patch's) and more than "
                        f"{2 * spec.dims} windows to fit on; {cfg.data} holds {len(feats)} (lower dims)")
    proj = Projection.fit(feats, spec.dims)
    return proj, proj(feats), owner


def build(cfg: cfgmod.IndexConfig) -> Built:
    """Build or extend the index of ``cfg.data``; returns the committed manifest."""
    ds = Dataset.open(cfg.data)
    uri = index_uri(cfg.data, cfg.output)
    client = storage.s3_client() if storage.is_s3(uri) else None
    current = read_manifest(uri)
    spec = spec_of(cfg, ds.sample_rate)
    tracks = indexable(ds, spec)
    if not tracks:
        raise UserError(f"no training track of {cfg.data} holds a {spec.window_s:g} s window")
    if current is not None:
        known = {str(t["id"]): _fingerprint(t) for t in current["tracks"]}
        stale = [t["id"] for t in tracks if str(t["id"]) in known and known[str(t["id"])] != _fingerprint(t)]
        changed = stored_spec_differences(current, spec)
        if stale or changed:
            log.warning("the index at %s no longer matches the dataset or settings (%s); rebuilding", uri,
                        f"{len(stale)} tracks changed" if stale else "embedding settings differ: " + ", ".join(changed))
            current = None
    run_id = runs.run_id()
    sc = _spark(cfg)
    files: dict[str, str] = {}
    if current is None:
        proj, sample, owner = fit_projection(sc, ds, tracks, spec, cfg)
        expected = sum(len(window_starts(int(t["num_samples"]), spec)) for t in tracks)
        factory = ann.choose_factory(cfg.factory, expected, len(sample))
        index = ann.build(factory, proj.dims, sample)
        old_tracks: list[dict[str, Any]] = []
        track_col, offset_col = [np.zeros(0, np.int32)], [np.zeros(0, np.float32)]
        files["pca"] = f"pca-{run_id}.npz"
        storage.write_bytes(storage.join(uri, files["pca"]), proj.to_bytes(), client)
        calib: dict[str, Any] = {}
        log.info("projection fitted on %d windows; index %s", len(sample), factory)
    else:
        files["pca"] = current["files"]["pca"]
        parts = read_parts(uri, current, client)
        proj, index, track_col, offset_col = parts.projection, parts.index, [parts.track], [parts.offset_s]
        old_tracks, factory = current["tracks"], current["factory"]
        calib = {k: current[k] for k in ("threshold", "threshold_percentile", "calibration_windows", "calibration")}
    done = {str(t["id"]) for t in old_tracks}
    new = [t for t in tracks if str(t["id"]) not in done]
    all_tracks = old_tracks + [{k: t.get(k) for k in (*TRACK_KEYS, *META_KEYS)} for t in new]
    if new:
        base = len(old_tracks)
        items = [(base + i, t) for i, t in enumerate(new)]
        root, sd, mu, pd, outage_s = ds.root, spec.to_dict(), ds.mu, proj.to_dict(), cfg.s3_outage_s
        rdd = sc.parallelize(items, _partitions(sc, len(items), cfg)).mapPartitions(
            lambda it: embed_partition(it, root, sd, mu, pd, outage_s))
        windows = sum(len(window_starts(int(t["num_samples"]), spec)) for t in new)
        with progress.Progress("index: embedding", windows, "windows") as bar:
            for pos, offs, vecs in rdd.toLocalIterator():
                v = np.frombuffer(vecs, np.float32).reshape(-1, proj.dims)
                index.add(np.ascontiguousarray(v))
                track_col.append(np.full(len(v), pos, np.int32))
                offset_col.append(np.frombuffer(offs, np.float32))
                bar.update(bar.done + len(v))
    track_arr, offset_arr = np.concatenate(track_col), np.concatenate(offset_col)
    if index.ntotal != len(track_arr):
        raise RuntimeError(f"index holds {index.ntotal} vectors but the map {len(track_arr)}")
    if not calib:
        calib = calibrate(Matcher(spec, proj, index, offset_arr), track_arr, sample, owner, list(enumerate(tracks)),
                          lambda t, a, n: ds.read_window(t, a, n), ds.mu, cfg.calibration_windows, cfg.copy_tracks)
        log.info("%s", summary(calib))
    files["index"], files["map"] = f"index-{run_id}.faiss", f"map-{run_id}.npz"
    storage.write_bytes(storage.join(uri, files["index"]), ann.to_bytes(index), client)
    buf = io.BytesIO()
    np.savez(buf, track=track_arr, offset_s=offset_arr)
    storage.write_bytes(storage.join(uri, files["map"]), buf.getvalue(), client)
    manifest = {
        "format": FORMAT, versions.KEY: FORMAT_VERSION, "dataset": cfg.data, "dataset_id": ds.dataset_id,
        "sample_rate": ds.sample_rate, "mu": ds.mu, "embedding": spec.to_dict(), "dims": proj.dims,
        "factory": factory,
        "nprobe": cfg.nprobe, "ef_search": cfg.ef_search, "vectors": int(index.ntotal), **calib,
        "files": files, "tracks": all_tracks, "added": len(new), "run": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_text(storage.join(uri, MANIFEST), json.dumps(manifest, indent=1) + "\n", client)
    keep = set(files.values()) | {MANIFEST, "config.json"}  # earlier runs' files, after the commit
    runs.delete_unreferenced(uri, lambda rel: rel in keep or rel.split("-", 1)[0] not in RUN_FILES, client)
    storage.write_text(storage.join(uri, "config.json"), cfgmod.to_json(cfg, "index"), client)
    log.info("index %s: %d vectors of %d tracks (%d added)", uri, index.ntotal, len(all_tracks), len(new))
    return Built(manifest, uri)


def stored_spec_differences(manifest: dict[str, Any], spec: EmbeddingSpec) -> list[str]:
    """The embedding settings in which an index's manifest differs from ``spec`` (all of them when it
    records none: an index of an earlier embedding)."""
    stored = manifest.get("embedding")
    if not isinstance(stored, dict):
        return ["method", "version"]
    return EmbeddingSpec.from_dict(stored).differences(spec) + [k for k in spec.to_dict() if k not in stored]


def run(cfg: cfgmod.IndexConfig) -> int:
    with s3retry.bounded(cfg.s3_outage_s):
        built = build(cfg)
    print(f"index: {built.uri} ({built.manifest['vectors']} vectors, {len(built.manifest['tracks'])} tracks, "
          f"{built.manifest['added']} added, threshold {built.manifest['threshold']:.4f}, margin "
          f"{built.manifest['calibration']['margin']})")
    return 0
