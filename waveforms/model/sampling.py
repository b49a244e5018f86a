"""The seeded sampling protocol over the fast generator (:mod:`waveforms.model.fastgen`).

Every stream starts from the same context: the prime's codes, or one silent
sample (the mu-law code of 0.0) when there is no prime. Random numbers are
drawn one per stream per step in step order, so the same seed gives the same
audio whatever the chunking. ``waveforms generate``, training's previews, the
evaluation's clips and the studio all sample through this module.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from waveforms.audio import mulaw
from waveforms.runtime.errors import UserError

CHUNK = 4096  # steps per compiled call: the progress bar and partial saves move at this grain


def start_codes(wavenet, prime: np.ndarray | None, streams: int) -> np.ndarray:
    """The context every stream starts from: ``(streams, n)`` int64 codes."""
    if prime is None or len(prime) == 0:
        prime = mulaw.encode(np.zeros(1, np.float32), wavenet.mu)
    prime = np.asarray(prime, dtype=np.int64).reshape(-1)
    if prime.min() < 0 or prime.max() > wavenet.config.mu:
        raise UserError(f"prime codes must lie in [0, {wavenet.config.mu}]")
    return np.tile(prime, (streams, 1))


def genre_ids(wavenet, genre: int | str | None, streams: int) -> np.ndarray | None:
    """The genre id of every stream, or None for an unconditioned model; checks the choice."""
    if genre is None or genre == "":
        if wavenet.config.num_genres > 0:
            raise UserError(f"this model is conditioned on genre; choose one of {wavenet.genres}")
        return None
    if wavenet.config.num_genres == 0:
        raise UserError("this model is not conditioned on genre; drop --genre")
    if isinstance(genre, str):
        if genre not in wavenet.genres:
            raise UserError(f"unknown genre {genre!r}; the model knows {wavenet.genres}")
        genre = wavenet.genres.index(genre)
    return np.full(streams, int(genre), dtype=np.int64)


def start_sampler(weights, wavenet, streams: int, genre: int | str | None = None,
                  prime: np.ndarray | None = None):
    """A :class:`waveforms.model.fastgen.Sampler` over ``streams`` streams, fed the start context (genre checked)."""
    from waveforms.model.fastgen import Sampler  # numba: compiled kernels load only when generating

    sampler = Sampler(weights, streams, genre_ids(wavenet, genre, streams))
    sampler.feed(start_codes(wavenet, prime, streams))
    return sampler


def draw(sampler, rng: np.random.Generator, n: int, streams: int, temperature: float,
         top_p: float = 1.0) -> np.ndarray:
    """The next ``n`` codes of every stream, uint8 ``(streams, n)``.

    One uniform per stream per step, drawn in step order: the same seed gives the same
    codes however the samples are split into calls.
    """
    uniforms = np.ascontiguousarray(rng.random((n, streams)).T)
    return sampler.sample_with(uniforms, temperature, top_p)


def generate(
    wavenet,
    n_samples: int,
    *,
    prime: np.ndarray | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    streams: int = 1,
    genre: int | str | None = None,
    on_chunk: Callable[[np.ndarray, int], None] | None = None,
) -> np.ndarray:
    """Sample ``n_samples`` new mu-law codes per stream: uint8 ``(streams, n_samples)``.

    Each new sample costs one pass through the layers' cached state. ``top_p < 1`` draws
    from the nucleus of each step's distribution (:func:`waveforms.model.fastgen.sample_code`).
    ``on_chunk(codes_so_far, n_done)`` is called after every chunk.
    """
    from waveforms.model.fastgen import FastWeights  # numba: compiled kernels load only when generating

    if temperature < 0:
        raise UserError("temperature must be >= 0")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p = {top_p:g} is not allowed; allowed: > 0 and <= 1")
    sampler = start_sampler(FastWeights.from_keras(wavenet.keras_model, wavenet.config), wavenet, streams,
                            genre, prime)
    rng = np.random.default_rng(seed)
    out = np.zeros((streams, n_samples), dtype=np.uint8)
    done = 0
    while done < n_samples:
        n = min(CHUNK, n_samples - done)
        out[:, done:done + n] = draw(sampler, rng, n, streams, temperature, top_p)
        done += n
        if on_chunk:
            on_chunk(out, done)
    return out


def warm_kernels() -> None:
    """Compile the fast generator's kernels into numba's on-disk cache (:func:`waveforms.model.fastgen.configure_cache`).

    ``make setup`` calls this, so a fresh install's first generation (the first training preview
    among them) loads the machine code instead of compiling it. The kernels' types do not depend
    on the model's size, so a ``tiny`` model with random weights compiles what every model uses.
    """
    from waveforms.model import build  # TensorFlow
    from waveforms.model.fastgen import BLOCK_MIN  # numba

    wavenet = build("tiny")
    for streams in (1, BLOCK_MIN):  # one block per stream, and blocks of streams
        generate(wavenet, 16, seed=0, streams=streams)
