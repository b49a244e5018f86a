"""The ``index`` stage (Spark): embed every training window, build the nearest-neighbour index.

Layout, beside the dataset (``DATASET/index/`` by default, local or ``s3://``)::

    pca-RUN.npz       the feature standardisation and PCA (fitted once, kept by later runs)
    index-RUN.faiss   the FAISS index; label i is row i of the map
    map-RUN.npz       per vector: ``track`` (position in index.json's tracks) and ``offset_s``
    index.json        the manifest, written last: the commit point

The first run fits the projection on a bounded sample of windows (one ranged read
per block of windows on the executors) and calibrates the match threshold on it.
Every run then embeds the tracks not yet indexed: executors read their tracks'
shards in blocks and send back only float32 vectors, which the driver adds to the
index partition by partition (``toLocalIterator``), so neither side holds audio
beyond one block. Tracks already indexed are not embedded again.
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
from waveforms import runs, spark, storage
from waveforms.dataset import Dataset
from waveforms.errors import UserError
from waveforms.evaluate import ann
from waveforms.evaluate.embed import HOP_S, WINDOW_S, Projection, track_features, window_starts
from waveforms.evaluate.mel import MelParams

log = logging.getLogger(__name__)

INDEX_DIR = "index"
MANIFEST = "index.json"
FORMAT = "waveforms-index"
VERSION = 1
PERCENTILE = 99.9
TRACK_KEYS = ("id", "shard", "offset", "num_samples")
META_KEYS = ("title", "artist", "licence")
RUN_FILES = ("pca", "index", "map")  # NAME-RUNID.EXT: one of each per run, named by the manifest


def index_uri(data: str, output: str = "") -> str:
    return output or storage.join(data, INDEX_DIR)


def read_manifest(uri: str) -> dict[str, Any] | None:
    """The committed ``index.json`` under ``uri``, or None."""
    path = storage.join(uri, MANIFEST)
    if not storage.exists(path):
        return None
    return json.loads(storage.read_text(path))


def _fingerprint(t: dict[str, Any]) -> tuple:
    return tuple(str(t[k]) for k in TRACK_KEYS)


def indexable(ds: Dataset) -> list[dict[str, Any]]:
    """The training tracks holding at least one whole window, sorted by id."""
    win = int(round(WINDOW_S * ds.sample_rate))
    return sorted((t for t in ds.split("train") if int(t["num_samples"]) >= win), key=lambda t: str(t["id"]))


# --- executor side -----------------------------------------------------------------------------------------

def _reader(ds: Dataset, track: dict[str, Any], client):
    return lambda start, length: ds.read_window(track, start, length, client)


def sample_partition(items: Iterable[tuple[int, dict[str, Any], list[int]]], root: str, sample_rate: int,
                     mu: int) -> Iterator[tuple[int, bytes]]:
    """``(track position, float32 features)`` for the sampled windows of each track."""
    ds = Dataset(root, [])
    client = storage.s3_client() if storage.is_s3(root) else None
    for pos, track, starts in items:
        feats = [f for _, f in track_features(_reader(ds, track, client), int(track["num_samples"]), sample_rate,
                                              mu, np.asarray(starts))]
        yield pos, np.concatenate(feats).astype(np.float32).tobytes()


def embed_partition(items: Iterable[tuple[int, dict[str, Any]]], root: str, sample_rate: int, mu: int,
                    proj: dict[str, np.ndarray]) -> Iterator[tuple[int, bytes, bytes]]:
    """``(track position, float32 offsets, float32 unit vectors)`` for every window of each track."""
    ds = Dataset(root, [])
    client = storage.s3_client() if storage.is_s3(root) else None
    projection = Projection(**proj)
    for pos, track in items:
        offsets, vectors = [], []
        for off, feats in track_features(_reader(ds, track, client), int(track["num_samples"]), sample_rate, mu):
            offsets.append(off)
            vectors.append(projection(feats))
        yield pos, np.concatenate(offsets).tobytes(), np.concatenate(vectors).tobytes()


# --- driver side -------------------------------------------------------------------------------------------

def sample_starts(n_samples: int, sample_rate: int, per_track: int) -> list[int]:
    """At most ``per_track`` window offsets spread evenly over a track (deterministic)."""
    starts = window_starts(n_samples, sample_rate)
    if len(starts) <= per_track:
        return starts.tolist()
    return starts[np.linspace(0, len(starts) - 1, per_track).round().astype(int)].tolist()


def calibrate(vectors: np.ndarray, tracks: np.ndarray, max_windows: int, seed: int = 0) -> tuple[float, int]:
    """The match threshold: on at most ``max_windows`` sampled windows, each window's similarity to its
    nearest window of a *different* track; the ``PERCENTILE``-th percentile of those. Returns it and the
    number of windows it was measured on.

    A nearest neighbour is a maximum over many windows, so the threshold is calibrated on maxima too:
    among distinct tracks of this dataset only 0.1% of windows come this close to another track.
    """
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(vectors))[:max_windows]
    v, t = vectors[pick], tracks[pick]
    sims = v @ v.T
    sims[t[:, None] == t[None, :]] = -np.inf
    nearest = sims.max(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    if nearest.size == 0:
        return 1.0, 0
    return float(np.percentile(nearest, PERCENTILE)), int(nearest.size)


@dataclass
class Built:
    manifest: dict[str, Any]
    uri: str


def _spark(cfg):
    return spark.stage_context(cfg.master, "waveforms-index", cfg.spark_conf)


def _partitions(sc, n: int, cfg) -> int:
    return max(1, min(n, cfg.partitions or 4 * sc.defaultParallelism))


def fit_projection(sc, ds: Dataset, tracks: list[dict[str, Any]], cfg) -> tuple[Projection, np.ndarray, np.ndarray]:
    """Fit the projection on a bounded sample; return it, the sample's unit vectors and their tracks."""
    per_track = max(1, math.ceil(cfg.sample_windows / len(tracks)))
    items = [(i, t, sample_starts(int(t["num_samples"]), ds.sample_rate, per_track)) for i, t in enumerate(tracks)]
    root, sr, mu = ds.root, ds.sample_rate, ds.mu
    rows = sc.parallelize(items, _partitions(sc, len(items), cfg)).mapPartitions(
        lambda it: sample_partition(it, root, sr, mu)).collect()
    dims = 2 * MelParams(sr).n_mels
    feats = np.concatenate([np.frombuffer(b, np.float32).reshape(-1, dims) for _, b in rows])
    owner = np.concatenate([np.full(len(b) // (4 * dims), p) for p, b in rows])
    proj = Projection.fit(feats, min(cfg.dims, dims))
    return proj, proj(feats), owner


def build(cfg: cfgmod.IndexConfig) -> Built:
    """Build or extend the index of ``cfg.data``; returns the committed manifest."""
    ds = Dataset.open(cfg.data)
    uri = index_uri(cfg.data, cfg.output)
    client = storage.s3_client() if storage.is_s3(uri) else None
    current = read_manifest(uri)
    tracks = indexable(ds)
    if not tracks:
        raise UserError(f"no training track of {cfg.data} holds a {WINDOW_S:g} s window")
    if current is not None:
        known = {str(t["id"]): _fingerprint(t) for t in current["tracks"]}
        stale = [t["id"] for t in tracks if str(t["id"]) in known and known[str(t["id"])] != _fingerprint(t)]
        if stale or current.get("sample_rate") != ds.sample_rate or current.get("dims") != cfg.dims:
            log.warning("the index at %s no longer matches the dataset or settings (%s); rebuilding", uri,
                        f"{len(stale)} tracks changed" if stale else "settings changed")
            current = None
    run_id = runs.run_id()
    sc = _spark(cfg)
    files: dict[str, str] = {}
    if current is None:
        proj, sample, owner = fit_projection(sc, ds, tracks, cfg)
        threshold, pairs = calibrate(sample, owner, cfg.calibration_windows)
        expected = sum(len(window_starts(int(t["num_samples"]), ds.sample_rate)) for t in tracks)
        factory = ann.choose_factory(cfg.factory, expected, len(sample))
        index = ann.build(factory, proj.dims, sample)
        old_tracks: list[dict[str, Any]] = []
        track_col, offset_col = [np.zeros(0, np.int32)], [np.zeros(0, np.float32)]
        files["pca"] = f"pca-{run_id}.npz"
        storage.write_bytes(storage.join(uri, files["pca"]), proj.to_bytes(), client)
        calib = {"threshold": threshold, "threshold_percentile": PERCENTILE, "calibration_windows": pairs}
        log.info("projection fitted on %d windows; threshold %.4f (%d windows); index %s", len(sample), threshold,
                 pairs, factory)
    else:
        files["pca"] = current["files"]["pca"]
        proj = Projection.from_bytes(storage.read_bytes(storage.join(uri, files["pca"]), client))
        index = ann.from_bytes(storage.read_bytes(storage.join(uri, current["files"]["index"]), client))
        with np.load(io.BytesIO(storage.read_bytes(storage.join(uri, current["files"]["map"]), client))) as z:
            track_col, offset_col = [z["track"]], [z["offset_s"]]
        old_tracks, factory = current["tracks"], current["factory"]
        calib = {k: current[k] for k in ("threshold", "threshold_percentile", "calibration_windows")}
    done = {str(t["id"]) for t in old_tracks}
    new = [t for t in tracks if str(t["id"]) not in done]
    all_tracks = old_tracks + [{k: t.get(k) for k in (*TRACK_KEYS, *META_KEYS)} for t in new]
    if new:
        base = len(old_tracks)
        items = [(base + i, t) for i, t in enumerate(new)]
        root, sr, mu, pd = ds.root, ds.sample_rate, ds.mu, proj.to_dict()
        rdd = sc.parallelize(items, _partitions(sc, len(items), cfg)).mapPartitions(
            lambda it: embed_partition(it, root, sr, mu, pd))
        for pos, offs, vecs in rdd.toLocalIterator():
            v = np.frombuffer(vecs, np.float32).reshape(-1, proj.dims)
            index.add(np.ascontiguousarray(v))
            track_col.append(np.full(len(v), pos, np.int32))
            offset_col.append(np.frombuffer(offs, np.float32))
    track_arr, offset_arr = np.concatenate(track_col), np.concatenate(offset_col)
    if index.ntotal != len(track_arr):
        raise RuntimeError(f"index holds {index.ntotal} vectors but the map {len(track_arr)}")
    files["index"], files["map"] = f"index-{run_id}.faiss", f"map-{run_id}.npz"
    storage.write_bytes(storage.join(uri, files["index"]), ann.to_bytes(index), client)
    buf = io.BytesIO()
    np.savez(buf, track=track_arr, offset_s=offset_arr)
    storage.write_bytes(storage.join(uri, files["map"]), buf.getvalue(), client)
    manifest = {
        "format": FORMAT, "version": VERSION, "dataset": cfg.data, "dataset_id": ds.dataset_id,
        "sample_rate": ds.sample_rate, "mu": ds.mu, "window_s": WINDOW_S, "hop_s": HOP_S,
        "n_mels": MelParams(ds.sample_rate).n_mels, "dims": proj.dims, "factory": factory,
        "nprobe": cfg.nprobe, "ef_search": cfg.ef_search, "vectors": int(index.ntotal), **calib,
        "files": files, "tracks": all_tracks, "added": len(new), "run": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_text(storage.join(uri, MANIFEST), json.dumps(manifest, indent=1) + "\n", client)
    keep = set(files.values()) | {MANIFEST, "config.json"}  # earlier runs' files, after the commit
    runs.delete_unreferenced(uri, lambda rel: rel in keep or rel.split("-", 1)[0] not in RUN_FILES, client)
    storage.write_text(storage.join(uri, "config.json"), cfgmod.dump_json(cfg, "index"), client)
    log.info("index %s: %d vectors of %d tracks (%d added)", uri, index.ntotal, len(all_tracks), len(new))
    return Built(manifest, uri)


def run(cfg: cfgmod.IndexConfig) -> int:
    built = build(cfg)
    print(f"index: {built.uri} ({built.manifest['vectors']} vectors, {len(built.manifest['tracks'])} tracks, "
          f"{built.manifest['added']} added, threshold {built.manifest['threshold']:.4f})")
    return 0
