"""Reference generator: the full Keras model over the last receptive field, once per new sample.

Used by test_generate.py and bench/bench_generate.py to check and time fast generation.
"""
from __future__ import annotations

import numpy as np

from waveforms.model.fastgen import sample_code
from waveforms.model.sampling import genre_ids, start_codes


def naive_generate(
    wavenet,
    n_samples: int,
    *,
    prime: np.ndarray | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    streams: int = 1,
    genre: int | str | None = None,
) -> np.ndarray:
    """Like :func:`waveforms.model.sampling.generate`, from the same context and random numbers, without a cache."""
    seq = start_codes(wavenet, prime, streams)
    genres = genre_ids(wavenet, genre, streams)
    rng = np.random.default_rng(seed)
    rf = wavenet.receptive_field
    out = np.zeros((streams, n_samples), dtype=np.uint8)
    for i in range(n_samples):
        window = seq[:, -rf:]
        inputs = window if genres is None else [window, genres]
        logits = np.asarray(wavenet.keras_model(inputs, training=False))[:, -1, :]
        uniforms = rng.random(streams)
        codes = np.array([sample_code(logits[s], temperature, uniforms[s], top_p) for s in range(streams)])
        out[:, i] = codes
        seq = np.concatenate([seq, codes[:, None]], axis=1)
    return out
