"""Window embeddings that keep time structure: the 1 s log-mel patch, normalised, whitened by PCA.

A window's log-mel frames (64 ms frames, 16 ms hop) are averaged in cells of
``cell_frames`` frames (64 ms), the patch (cells x mel bands) loses its mean (a
gain change adds a constant in dB) and is divided by its standard deviation; a
patch with less than ``floor_db`` of structure (silence, DC) becomes the zero
vector, which matches nothing. A :class:`Projection` fitted on a sample of the
dataset's patches projects on the top principal components, whitens them and
L2-normalises, so inner product = cosine similarity. The settings are one
:class:`EmbeddingSpec`, recorded in the index's ``index.json``.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterator

import numpy as np

from waveforms.audio import mulaw
from waveforms.evaluate.mel import MelParams, log_mel

METHOD = "mel-patch"
VERSION = 2


@dataclass(frozen=True)
class EmbeddingSpec:
    """Every setting an embedding depends on; two indexes compare only if their specs are equal."""

    sample_rate: int
    window_s: float = 1.0
    hop_s: float = 0.5
    n_mels: int = 64
    cell_frames: int = 4
    dims: int = 64
    floor_db: float = 1.0
    query_step_s: float = 0.03125
    method: str = METHOD
    version: int = VERSION

    @property
    def mel(self) -> MelParams:
        return MelParams(self.sample_rate, self.n_mels)

    @property
    def window(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    @property
    def cells(self) -> int:
        return self.mel.frames_in(self.window) // self.cell_frames

    @property
    def features(self) -> int:
        return self.cells * self.n_mels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EmbeddingSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def differences(self, other: "EmbeddingSpec") -> list[str]:
        """Names of the settings that differ (empty: the same embedding)."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if a[k] != b[k]]


def window_starts(n_samples: int, spec: EmbeddingSpec) -> np.ndarray:
    """Sample offsets of every whole window of a track (the index's grid)."""
    if n_samples < spec.window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - spec.window + 1, spec.hop, dtype=np.int64)


def second_starts(n_samples: int, spec: EmbeddingSpec) -> list[np.ndarray]:
    """For each whole second ``k`` of a clip, the window offsets tried for it: one hop's span of starts
    ``query_step_s`` apart, centred on ``k`` s and moved inside the clip, so one of them lies within
    ``query_step_s / 2`` of the index's grid wherever the clip began in its source."""
    sr, win, hop = spec.sample_rate, spec.window, spec.hop
    step = max(1, int(round(spec.query_step_s * sr)))
    out = []
    for k in range(n_samples // sr):
        if k * sr + win > n_samples:
            break
        lo = min(max(0, k * sr - hop // 2), max(0, n_samples - win - hop + step))
        s = lo + np.arange(0, hop, step, dtype=np.int64)
        out.append(s[s + win <= n_samples])
    return out


def patch_features(windows: np.ndarray, spec: EmbeddingSpec) -> np.ndarray:
    """``(n, samples)`` float audio -> ``(n, cells * n_mels)`` float32 normalised log-mel patches."""
    lm = log_mel(windows, spec.mel)  # (n, frames, mels)
    n, c = lm.shape[0], spec.cells
    lm = lm[:, :c * spec.cell_frames].reshape(n, c, spec.cell_frames, spec.n_mels).mean(axis=2)
    lm = lm - lm.mean(axis=(1, 2), keepdims=True)
    std = lm.std(axis=(1, 2), keepdims=True)
    z = np.where(std >= spec.floor_db, lm / np.maximum(std, 1e-6), 0.0)
    return z.reshape(n, -1).astype(np.float32)


def features_at(codes: np.ndarray, starts: np.ndarray, spec: EmbeddingSpec, mu: int = 255) -> np.ndarray:
    """Patch features of the windows of an in-memory code array at ``starts``."""
    audio = mulaw.decode(np.asarray(codes), mu)
    return patch_features(audio[np.asarray(starts)[:, None] + np.arange(spec.window)[None, :]], spec)


def track_features(read: Callable[[int, int], np.ndarray], n_samples: int, spec: EmbeddingSpec, mu: int = 255,
                   starts: np.ndarray | None = None, block: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(offsets_s, features)`` for the windows at ``starts`` (default: all) of one track, in blocks.

    ``read(start, length)`` returns mu-law codes; each block of ``block`` windows is one read.
    """
    starts = window_starts(n_samples, spec) if starts is None else np.asarray(starts, dtype=np.int64)
    for b in range(0, len(starts), block):
        s = starts[b:b + block]
        first, last = int(s[0]), int(s[-1]) + spec.window
        yield (s / spec.sample_rate).astype(np.float32), features_at(read(first, last - first), s - first, spec, mu)


@dataclass
class Projection:
    """Centre, project on the principal components, whiten, L2-normalise (zero features stay zero)."""

    mean: np.ndarray  # (features,)
    components: np.ndarray  # (dims, features), each row divided by its component's standard deviation

    @classmethod
    def fit(cls, features: np.ndarray, dims: int) -> "Projection":
        x = np.asarray(features, dtype=np.float32)
        mean = x.mean(axis=0, dtype=np.float64)
        cov = np.zeros((x.shape[1], x.shape[1]))
        for b in range(0, len(x), 4096):  # float64 sums over blocks: memory of one block, not of all rows
            z = x[b:b + 4096].astype(np.float64) - mean
            cov += z.T @ z
        evals, evecs = np.linalg.eigh(cov / max(1, len(x) - 1))
        order = np.argsort(evals)[::-1][:dims]
        comps = evecs[:, order].T
        comps *= np.where(comps[:, :1] < 0, -1.0, 1.0)  # a deterministic sign per component
        comps /= np.sqrt(np.maximum(evals[order], 1e-12))[:, None]
        return cls(mean.astype(np.float32), comps.astype(np.float32))

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        y = (x - self.mean) @ self.components.T
        y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return np.where(np.any(x != 0, axis=1, keepdims=True), y, 0.0).astype(np.float32)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, components=self.components)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Projection":
        with np.load(io.BytesIO(data)) as z:
            return cls(z["mean"], z["components"])

    def to_dict(self) -> dict:
        return {"mean": self.mean, "components": self.components}
