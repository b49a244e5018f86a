"""Window embeddings: 1 s windows every 0.5 s, log-mel pooled, standardised, PCA-reduced, L2-normalised.

Per window the log-mel frames lose their overall mean (a gain change shifts
every dB value by the same amount), then each band's mean and standard deviation
over the window's frames make a ``2 * n_mels`` feature. A :class:`Projection`
fitted on a sample of windows standardises the features, projects them on the
top principal components and L2-normalises, so inner product = cosine similarity.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from waveforms import mulaw
from waveforms.evaluate.mel import MelParams, log_mel

WINDOW_S = 1.0
HOP_S = 0.5


def window_starts(n_samples: int, sample_rate: int, window_s: float = WINDOW_S, hop_s: float = HOP_S) -> np.ndarray:
    """Sample offsets of every whole window of a track."""
    win, hop = int(round(window_s * sample_rate)), int(round(hop_s * sample_rate))
    if n_samples < win:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - win + 1, hop, dtype=np.int64)


def pooled_features(windows: np.ndarray, params: MelParams) -> np.ndarray:
    """``(n, samples)`` float audio -> ``(n, 2 * n_mels)`` float32 gain-invariant features."""
    lm = log_mel(windows, params)  # (n, frames, mels)
    lm = lm - lm.mean(axis=(1, 2), keepdims=True)
    return np.concatenate([lm.mean(axis=1), lm.std(axis=1)], axis=1).astype(np.float32)


def track_features(read: Callable[[int, int], np.ndarray], n_samples: int, sample_rate: int, mu: int = 255,
                   starts: np.ndarray | None = None, block: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(offsets_s, features)`` for the windows at ``starts`` (default: all) of one track, in blocks.

    ``read(start, length)`` returns mu-law codes; each block of ``block`` windows is one read.
    """
    params = MelParams(sample_rate)
    win = int(round(WINDOW_S * sample_rate))
    starts = window_starts(n_samples, sample_rate) if starts is None else np.asarray(starts, dtype=np.int64)
    for b in range(0, len(starts), block):
        s = starts[b:b + block]
        first, last = int(s[0]), int(s[-1]) + win
        audio = mulaw.decode(read(first, last - first), mu)
        idx = (s - first)[:, None] + np.arange(win)[None, :]
        yield (s / sample_rate).astype(np.float32), pooled_features(audio[idx], params)


def codes_features(codes: np.ndarray, sample_rate: int, mu: int = 255, hop_s: float = HOP_S) -> tuple[np.ndarray, np.ndarray]:
    """Features of every window of an in-memory code array (queries)."""
    starts = window_starts(len(codes), sample_rate, hop_s=hop_s)
    if len(starts) == 0:
        return np.zeros(0, np.float32), np.zeros((0, 2 * MelParams(sample_rate).n_mels), np.float32)
    parts = list(track_features(lambda a, n: codes[a:a + n], len(codes), sample_rate, mu, starts))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@dataclass
class Projection:
    """Standardise, project on principal components, L2-normalise."""

    mean: np.ndarray  # (features,)
    scale: np.ndarray  # (features,)
    components: np.ndarray  # (dims, features)

    @classmethod
    def fit(cls, features: np.ndarray, dims: int) -> "Projection":
        x = np.asarray(features, dtype=np.float64)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = (x - mean) / scale
        evals, evecs = np.linalg.eigh(z.T @ z / max(1, len(z) - 1))
        order = np.argsort(evals)[::-1][:dims]
        comps = evecs[:, order].T
        comps *= np.where(comps[:, :1] < 0, -1.0, 1.0)  # a deterministic sign per component
        return cls(mean.astype(np.float32), scale.astype(np.float32), comps.astype(np.float32))

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    def __call__(self, features: np.ndarray) -> np.ndarray:
        y = ((np.asarray(features, np.float32) - self.mean) / self.scale) @ self.components.T
        return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, scale=self.scale, components=self.components)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Projection":
        with np.load(io.BytesIO(data)) as z:
            return cls(z["mean"], z["scale"], z["components"])

    def to_dict(self) -> dict:
        return {"mean": self.mean, "scale": self.scale, "components": self.components}
