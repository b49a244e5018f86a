"""mu-law companding: floats in [-1, 1] <-> uint8 codes (256 levels for mu=255)."""
from __future__ import annotations

import numpy as np


def check_mu(mu: int) -> int:
    """``mu`` itself if codes 0..mu fit in one byte (1 <= mu <= 255); ValueError otherwise."""
    if isinstance(mu, bool) or int(mu) != mu or not 1 <= mu <= 255:
        raise ValueError(f"mu must be an integer in 1..255 (codes are uint8), got {mu!r}")
    return int(mu)


def encode(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """Compand and quantise to ``mu + 1`` uint8 levels: f(x) = sign(x)·ln(1+mu|x|)/ln(1+mu)."""
    mu = check_mu(mu)
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.rint((y + 1.0) * 0.5 * mu).astype(np.uint8)


def decode(q: np.ndarray, mu: int = 255) -> np.ndarray:
    """Inverse of :func:`encode`: codes to floats in [-1, 1]."""
    y = 2.0 * np.asarray(q, dtype=np.float32) / mu - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def to_pcm16(q: np.ndarray, mu: int = 255) -> np.ndarray:
    """Codes to little-endian 16-bit PCM samples: :func:`decode`, scaled by 32767, rounded to nearest, clipped."""
    return np.clip(np.rint(decode(q, mu) * 32767.0), -32768, 32767).astype("<i2")
