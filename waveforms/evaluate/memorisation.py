"""The nearest training audio of every second of a clip, from the index built by the ``index`` stage."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from waveforms import storage
from waveforms.errors import UserError
from waveforms.evaluate import ann
from waveforms.evaluate.embed import Projection, track_features
from waveforms.evaluate.index import read_manifest


@dataclass
class LoadedIndex:
    manifest: dict[str, Any]
    projection: Projection
    index: Any
    track: np.ndarray
    offset_s: np.ndarray

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @classmethod
    def open(cls, uri: str) -> "LoadedIndex":
        manifest = read_manifest(uri)
        if manifest is None:
            raise UserError(f"no index at {uri}: run `waveforms index --data DATASET` first")
        client = storage.s3_client() if storage.is_s3(uri) else None
        files = manifest["files"]
        proj = Projection.from_bytes(storage.read_bytes(storage.join(uri, files["pca"]), client))
        index = ann.from_bytes(storage.read_bytes(storage.join(uri, files["index"]), client))
        ann.set_search_params(index, int(manifest.get("nprobe", 32)), int(manifest.get("ef_search", 64)))
        with np.load(io.BytesIO(storage.read_bytes(storage.join(uri, files["map"]), client))) as z:
            track, offset = z["track"], z["offset_s"]
        return cls(manifest, proj, index, track, offset)

    def embed_seconds(self, codes: np.ndarray, sample_rate: int, mu: int = 255) -> np.ndarray:
        """One unit vector per whole second of ``codes`` (windows at 0, 1, 2 ... s)."""
        if sample_rate != int(self.manifest["sample_rate"]):
            raise UserError(f"audio at {sample_rate} Hz cannot be compared with an index of "
                            f"{self.manifest['sample_rate']} Hz audio")
        codes = np.asarray(codes, dtype=np.uint8).reshape(-1)
        starts = np.arange(0, len(codes) - sample_rate + 1, sample_rate)
        if len(starts) == 0:
            return np.zeros((0, self.projection.dims), np.float32)
        feats = np.concatenate([f for _, f in track_features(lambda a, n: codes[a:a + n], len(codes), sample_rate,
                                                             mu, starts)])
        return self.projection(feats)

    def nearest(self, vectors: np.ndarray) -> list[dict[str, Any]]:
        """For each vector: the nearest training window (track, metadata, offset) and its similarity."""
        if len(vectors) == 0:
            return []
        sims, labels = ann.search(self.index, vectors, 1)
        out = []
        for sim, label in zip(sims[:, 0], labels[:, 0]):
            if label < 0:
                out.append({"track_id": None, "title": None, "artist": None, "licence": None, "offset_s": None,
                            "similarity": None, "match": False})
                continue
            t = self.manifest["tracks"][int(self.track[label])]
            out.append({"track_id": str(t["id"]), "title": t.get("title"), "artist": t.get("artist"),
                        "licence": t.get("licence"), "offset_s": round(float(self.offset_s[label]), 3),
                        "similarity": round(float(sim), 6), "match": bool(sim >= self.threshold)})
        return out


def check(loaded: LoadedIndex, clips: dict[str, np.ndarray], sample_rate: int, mu: int = 255) -> dict[str, Any]:
    """The ``memorisation`` section of evaluation.json for named clips of mu-law codes."""
    seconds = []
    for name, codes in clips.items():
        for k, row in enumerate(loaded.nearest(loaded.embed_seconds(codes, sample_rate, mu))):
            seconds.append({"clip": name, "second": k, **row})
    matches = sum(s["match"] for s in seconds)
    return {"threshold": loaded.threshold, "threshold_percentile": float(loaded.manifest["threshold_percentile"]),
            "match_fraction": matches / len(seconds) if seconds else 0.0, "seconds": seconds}
