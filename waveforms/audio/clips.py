"""A generated clip's files: the 16-bit PCM WAV and the sidecar JSON written beside it."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from waveforms.audio import mulaw
from waveforms.storage import atomic_local


def write_wav(path: str | Path, codes: np.ndarray, sample_rate: int, mu: int = 255) -> None:
    """Decode mu-law codes and write 16-bit PCM mono WAV atomically."""
    pcm = mulaw.to_pcm16(codes, mu)
    with atomic_local(path) as fh:
        with wave.open(fh, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(int(sample_rate))
            wav.writeframes(pcm.tobytes())


def sidecar(model: str, model_meta: dict, sample_rate: int, samples: int, settings: dict, stream: int = 0,
            **extra) -> dict:
    """The JSON written beside a generated WAV: the model, its dataset id and commit, the length and the settings."""
    return {"model": model, "model_dataset_id": model_meta.get("dataset_id", ""),
            "model_git_commit": model_meta.get("git_commit", ""), "sample_rate": int(sample_rate),
            "samples": int(samples), "stream": stream, "settings": settings, **extra}
