"""The nearest training audio of every second of a clip, from the index built by the ``index`` stage."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from waveforms import storage
from waveforms.evaluate import ann
from waveforms.evaluate.embed import METHOD, VERSION, EmbeddingSpec
from waveforms.evaluate.index_format import read_manifest, read_parts
from waveforms.evaluate.match import Matcher
from waveforms.runtime.errors import UserError


def stored_spec(uri: str, manifest: dict[str, Any]) -> EmbeddingSpec:
    """The index's embedding, if this version can compute it; a clear error otherwise."""
    stored = manifest.get("embedding")
    if not isinstance(stored, dict) or stored.get("method") != METHOD or stored.get("version") != VERSION:
        found = "no embedding spec" if not isinstance(stored, dict) else \
            f"embedding {stored.get('method')} version {stored.get('version')}"
        raise UserError(f"the index at {uri} records {found}; this version embeds with {METHOD} version {VERSION}: "
                        f"rebuild it with `waveforms index --data {manifest.get('dataset', 'DATASET')}`")
    return EmbeddingSpec.from_dict(stored)


@dataclass
class LoadedIndex:
    manifest: dict[str, Any]
    matcher: Matcher
    track: np.ndarray

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def spec(self) -> EmbeddingSpec:
        return self.matcher.spec

    @property
    def index(self):
        return self.matcher.index

    @property
    def offset_s(self) -> np.ndarray:
        return self.matcher.offset_s

    @classmethod
    def open(cls, uri: str) -> "LoadedIndex":
        manifest = read_manifest(uri)
        if manifest is None:
            raise UserError(f"no index at {uri}: run `waveforms index --data DATASET` first")
        spec = stored_spec(uri, manifest)
        parts = read_parts(uri, manifest, storage.s3_client() if storage.is_s3(uri) else None)
        ann.set_search_params(parts.index, int(manifest.get("nprobe", 32)), int(manifest.get("ef_search", 64)))
        return cls(manifest, Matcher(spec, parts.projection, parts.index, parts.offset_s), parts.track)

    def nearest(self, codes: np.ndarray, sample_rate: int, mu: int = 255) -> list[dict[str, Any]]:
        """For each whole second of ``codes``: the nearest training window (track, metadata, the offset in
        the track lining up with the second's start) and its similarity."""
        if sample_rate != self.spec.sample_rate:
            raise UserError(f"audio at {sample_rate} Hz cannot be compared with an index of "
                            f"{self.spec.sample_rate} Hz audio")
        out = []
        for m in self.matcher.seconds(codes, mu):
            if m.label < 0 or math.isnan(m.similarity):
                out.append({"track_id": None, "title": None, "artist": None, "licence": None, "offset_s": None,
                            "similarity": None, "match": False})
                continue
            t = self.manifest["tracks"][int(self.track[m.label])]
            out.append({"track_id": str(t["id"]), "title": t.get("title"), "artist": t.get("artist"),
                        "licence": t.get("licence"), "offset_s": round(m.offset_s, 3),
                        "similarity": round(m.similarity, 6), "match": bool(m.similarity >= self.threshold)})
        return out


def check(loaded: LoadedIndex, clips: dict[str, np.ndarray], sample_rate: int, mu: int = 255) -> dict[str, Any]:
    """The ``memorisation`` section of evaluation.json for named clips of mu-law codes."""
    seconds = []
    for name, codes in clips.items():
        for k, row in enumerate(loaded.nearest(codes, sample_rate, mu)):
            seconds.append({"clip": name, "second": k, **row})
    matches = sum(s["match"] for s in seconds)
    calib = loaded.manifest.get("calibration", {})
    return {"threshold": loaded.threshold, "threshold_percentile": float(loaded.manifest["threshold_percentile"]),
            "margin": {k: calib.get(k) for k in ("copy_min", "negative_max", "margin")},
            "negative": calib.get("negative", {}),
            "match_fraction": matches / len(seconds) if seconds else 0.0, "seconds": seconds}
