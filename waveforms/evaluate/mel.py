"""Log-mel spectrograms in numpy: a triangular mel filterbank (HTK mel scale) and framed FFTs.

Frames lie wholly inside the signal (no padding), so the frames of a window
depend on that window's samples alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

POWER_FLOOR = 1e-10  # -100 dB: keeps log finite in silence


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 30.0, fmax: float | None = None) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangles equally spaced in mel, each of unit area (Slaney norm)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lo) / (mid - lo)
    falling = (hi - freqs[None, :]) / (hi - mid)
    tri = np.maximum(0.0, np.minimum(rising, falling))
    tri *= (2.0 / (hi - lo))  # equal area: a band's energy does not grow with its width
    return tri.astype(np.float32)


@dataclass(frozen=True)
class MelParams:
    """STFT and filterbank settings derived from the sample rate (64 ms frames, 16 ms hop)."""

    sample_rate: int
    n_mels: int = 64

    @property
    def n_fft(self) -> int:
        return 2 ** int(round(math.log2(0.064 * self.sample_rate)))

    @property
    def hop(self) -> int:
        return self.n_fft // 4

    def frames_in(self, n_samples: int) -> int:
        return 0 if n_samples < self.n_fft else 1 + (n_samples - self.n_fft) // self.hop


@lru_cache(maxsize=16)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n + 1)[:-1].astype(np.float32)  # periodic Hann


def log_mel(x: np.ndarray, params: MelParams) -> np.ndarray:
    """Log-mel frames (dB) of ``x`` with shape ``(..., samples)`` -> ``(..., frames, n_mels)`` float32."""
    x = np.asarray(x, dtype=np.float32)
    n = params.frames_in(x.shape[-1])
    if n == 0:
        return np.zeros((*x.shape[:-1], 0, params.n_mels), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, params.n_fft, axis=-1)[..., :: params.hop, :][..., :n, :]
    spec = np.fft.rfft(frames * _hann(params.n_fft), axis=-1)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32) / params.n_fft
    mel = power @ filterbank(params.sample_rate, params.n_fft, params.n_mels).T
    return (10.0 * np.log10(np.maximum(mel, POWER_FLOOR))).astype(np.float32)

