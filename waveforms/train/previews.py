"""Hear a model while it trains: short clips from the fast generator at fixed steps.

Every preview is ``preview_seconds`` of audio generated from the weights the
model would be saved with (the moving average when training keeps one), with
a fixed seed and the sampling defaults of every generation (``config.generation``), written as ``MODEL_DIR/previews/step_NNNNNN.wav``
(16-bit PCM, through the model folder's OutputDir, so s3:// works), as a
TensorBoard audio summary, and named in metrics.jsonl. Generation draws from
its own NumPy generator and reads a copy of the weights, so previews never
change the training trajectory.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from waveforms.audio import mulaw
from waveforms.audio.clips import write_wav
from waveforms.config.generation import TEMPERATURE, TOP_P
from waveforms.model.sampling import generate
from waveforms.storage import OutputDir
from waveforms.train.metrics_log import MetricsLog

log = logging.getLogger(__name__)

DIR = "previews"


def name(step: int) -> str:
    return f"{DIR}/step_{int(step):06d}.wav"


def due(step: int, every: int, val_every: int, done: bool) -> bool:
    """Whether a preview is due at ``step`` (``every`` 0 = at each validation; <0 = off)."""
    if every < 0:
        return False
    period = every or val_every
    return step % period == 0 or done


class Previewer:
    """Writes previews of ``wavenet`` (its weights replaced by the ones given at each call)."""

    def __init__(self, wavenet, out: OutputDir, metrics: MetricsLog, seconds: float, seed: int,
                 genre: int | None = None):
        self.wavenet, self.out, self.metrics = wavenet, out, metrics
        self.n = max(1, round(seconds * wavenet.sample_rate))
        self.seed, self.genre = seed, genre
        self.seconds_spent = 0.0

    def __call__(self, step: int, weights: list[np.ndarray]) -> dict[str, Any]:
        """Generate, write and log the preview of ``step``; returns the keys for the metrics row."""
        t0 = time.perf_counter()
        self.wavenet.keras_model.set_weights(weights)
        codes = generate(self.wavenet, self.n, temperature=TEMPERATURE, top_p=TOP_P, seed=self.seed,
                         genre=self.genre)[0]
        rel = name(step)
        write_wav(self.out.path(rel), codes, self.wavenet.sample_rate, self.wavenet.mu)
        self.out.upload(rel)
        self.metrics.audio("preview", mulaw.decode(codes, self.wavenet.mu), self.wavenet.sample_rate, step)
        spent = time.perf_counter() - t0
        self.seconds_spent += spent
        log.info("preview %s (%.1f s of audio in %.2f s)", rel, self.n / self.wavenet.sample_rate, spent)
        return {"preview": rel, "preview_s": spent}
