"""The Fréchet distance between Gaussians of feature rows, and their running statistics."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
