"""Bits per sample on the whole validation split, and the Fréchet distance of log-mel frame statistics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from waveforms.dataset import Dataset, regions
from waveforms.units import bits


# --- Fréchet distance --------------------------------------------------------------------------------------

@dataclass
class GaussianStats:
    """Running mean and covariance of feature rows (float64 sums: memory does not grow with the data)."""

    dims: int
    n: int = 0
    total: np.ndarray = field(init=False)
    outer: np.ndarray = field(init=False)

    def __post_init__(self):
        self.total = np.zeros(self.dims)
        self.outer = np.zeros((self.dims, self.dims))

    def update(self, rows: np.ndarray) -> "GaussianStats":
        x = np.asarray(rows, dtype=np.float64).reshape(-1, self.dims)
        self.n += len(x)
        self.total += x.sum(axis=0)
        self.outer += x.T @ x
        return self

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.n, 1)

    @property
    def cov(self) -> np.ndarray:
        m = self.mean
        return (self.outer - self.n * np.outer(m, m)) / max(self.n - 1, 1)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)).

    tr((C1 C2)^(1/2)) = tr((S C2 S)^(1/2)) with S = C1^(1/2); S C2 S is symmetric PSD, so
    both roots come from symmetric eigen-decompositions.
    """
    s = _sqrt_psd(cov1)
    inner = np.linalg.eigvalsh(s @ cov2 @ s)
    tr_root = float(np.sqrt(np.clip(inner, 0.0, None)).sum())
    d = float(np.sum((np.asarray(mu1) - np.asarray(mu2)) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * tr_root)
    return max(d, 0.0)


def fd(a: GaussianStats, b: GaussianStats) -> float:
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


# --- validation negative log-likelihood --------------------------------------------------------------------

@dataclass(frozen=True)
class ValWindow:
    """Codes ``[start, start + length)`` of a track region; targets at window index >= ``first``."""

    track: dict[str, Any]
    start: int
    length: int
    first: int
    genre: int = 0


def val_windows(ds: Dataset, window: int, receptive_field: int, genres: list[str] | None = None) -> list[ValWindow]:
    """Deterministic windows over the whole validation split (sorted by track id).

    A region of n samples is cut into consecutive chunks of ``window`` samples
    (the same cut for every model). Chunk k counts the targets from
    ``k * window + receptive_field`` to its end: their receptive field lies
    inside the chunk. A shorter last chunk is read right-aligned as a full
    window (context from the chunk before), counting the same positions.
    """
    _, val, _ = regions(ds, window, genres)
    index = {g: i for i, g in enumerate(genres or [])}
    out: list[ValWindow] = []
    for r in sorted(val, key=lambda r: (str(r.track["id"]), r.start)):
        g = index.get(str(r.track.get("genre") or ""), 0)
        for c in range(r.start, r.end, window):
            first_abs = c + receptive_field
            end = min(c + window, r.end)
            if first_abs >= end:
                continue
            start = min(c, r.end - window)
            out.append(ValWindow(r.track, start, window, first_abs - start, g))
    return out


def window_nll(wavenet, codes: np.ndarray, first: np.ndarray, genre: np.ndarray | None = None) -> tuple[float, int]:
    """Summed NLL (nats) and target count of windows ``codes`` (batch, length): output t predicts t + 1,
    targets from index ``first`` (per window) on."""
    import keras

    x = codes[:, :-1].astype(np.int32)
    logits = wavenet.keras_model.predict_on_batch((x, genre.astype(np.int32)) if genre is not None else x)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    per = np.asarray(loss(codes[:, 1:].astype(np.int32), logits), dtype=np.float64)  # (batch, length - 1)
    keep = np.arange(1, codes.shape[1])[None, :] >= first[:, None]
    return float(per[keep].sum()), int(keep.sum())


def val_nll(wavenet, ds: Dataset, window: int, batch_size: int = 4) -> dict[str, Any]:
    """Mean NLL per counted sample over :func:`val_windows`, in nats and bits."""
    wins = val_windows(ds, window, wavenet.receptive_field, wavenet.genres or None)
    conditioned = wavenet.config.num_genres > 0
    total, count = 0.0, 0
    for b in range(0, len(wins), batch_size):
        batch = wins[b:b + batch_size]
        codes = np.stack([ds.read_window(w.track, w.start, w.length) for w in batch])
        genre = np.array([w.genre for w in batch]) if conditioned else None
        s, n = window_nll(wavenet, codes, np.array([w.first for w in batch]), genre)
        total, count = total + s, count + n
    nats = total / count if count else float("nan")
    return {"val_nats": nats, "val_bits_per_sample": bits(nats), "val_windows": len(wins),
            "val_samples": count}

