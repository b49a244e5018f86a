"""16-bit PCM mono WAV bytes: a header (written before the samples exist) and sample chunks.

The header is the canonical 44-byte one Python's :mod:`wave` writes, so a stream of
header + chunks equals the file ``waveforms generate`` writes for the same samples.
"""
from __future__ import annotations

import struct

import numpy as np

from waveforms.audio import mulaw

UNKNOWN = 0xFFFFFFFF - 36  # data size for a stream whose length is not known


def header(sample_rate: int, n_samples: int | None) -> bytes:
    """A RIFF/WAVE header for ``n_samples`` mono 16-bit samples (None: a large, unknown size)."""
    data = UNKNOWN if n_samples is None else 2 * int(n_samples)
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, int(sample_rate), 2 * int(sample_rate), 2, 16)
            + b"data" + struct.pack("<I", data))


def pcm(codes: np.ndarray, mu: int = 255) -> bytes:
    """mu-law codes as little-endian 16-bit PCM bytes (:func:`waveforms.audio.mulaw.to_pcm16`, as ``clips.write_wav``)."""
    return mulaw.to_pcm16(codes, mu).tobytes()


def wav_bytes(codes: np.ndarray, sample_rate: int, mu: int = 255) -> bytes:
    return header(sample_rate, len(codes)) + pcm(codes, mu)
