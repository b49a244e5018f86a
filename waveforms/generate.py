"""Autoregressive generation with fast cached sampling (:mod:`waveforms.fastgen`).

Every stream starts from the same context: the prime's codes, or one silent
sample (the mu-law code of 0.0) when there is no prime. Random numbers are
drawn one per stream per step in step order, so the same seed gives the same
audio whatever the chunking.
"""
from __future__ import annotations

import json
import logging
import time
import wave
from pathlib import Path
from typing import Callable

import numpy as np

from waveforms import config as cfgmod
from waveforms import mulaw, storage
from waveforms.errors import UserError
from waveforms.storage import OutputDir, atomic_local, write_text
from waveforms.transform.audio import AudioSettings, file_to_codes

log = logging.getLogger(__name__)
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
    """A :class:`waveforms.fastgen.Sampler` over ``streams`` streams, fed the start context (genre checked)."""
    from waveforms.fastgen import Sampler  # numba: compiled kernels load only when generating

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
    from the nucleus of each step's distribution (:func:`waveforms.fastgen.sample_code`).
    ``on_chunk(codes_so_far, n_done)`` is called after every chunk.
    """
    from waveforms.fastgen import FastWeights  # numba: compiled kernels load only when generating

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


def write_wav(path: str | Path, codes: np.ndarray, sample_rate: int, mu: int = 255) -> None:
    """Decode mu-law codes and write 16-bit PCM mono WAV atomically."""
    pcm = mulaw.to_pcm16(codes, mu)
    with atomic_local(path) as fh:
        with wave.open(fh, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(int(sample_rate))
            wav.writeframes(pcm.tobytes())


def stream_paths(output: str, streams: int) -> list[str]:
    """``out.wav`` for one stream; ``out_0.wav``, ``out_1.wav``, ... for several (local or s3://)."""
    if streams == 1:
        return [str(output)]
    name = Path(storage.basename(str(output)))
    return [storage.join(storage.parent(str(output)), f"{name.stem}_{k}{name.suffix or '.wav'}")
            for k in range(streams)]


def prime_settings(wavenet):
    """How primes are decoded: the model's dataset's transform settings (model.json's ``transform``).

    Models trained before model.json held them get the transform defaults. Either way the rate
    and mu are the model's, and no length minimum applies.
    """
    stored = wavenet.meta.get("transform") or {}
    known = {k: v for k, v in stored.items() if k in AudioSettings.__dataclass_fields__}
    if not stored:
        log.info("model.json names no transform settings: the prime is decoded with the transform defaults")
    return AudioSettings.from_config(**{**known, "sample_rate": wavenet.sample_rate, "mu": wavenet.mu,
                                        "min_seconds": 0.0})


def load_prime(path: str, wavenet) -> np.ndarray:
    """An audio file as mu-law codes at the model's rate, processed like its training data."""
    if not storage.exists(path):
        raise UserError(f"prime file not found: {path}")
    with storage.local_copy(path) as local:
        return file_to_codes(str(local), wavenet.sample_rate, wavenet.mu, settings=prime_settings(wavenet))


def sidecar(model: str, model_meta: dict, sample_rate: int, samples: int, settings: dict, stream: int = 0,
            **extra) -> dict:
    """The JSON written beside a generated WAV: the model, its dataset id and commit, the length and the settings."""
    return {"model": model, "model_dataset_id": model_meta.get("dataset_id", ""),
            "model_git_commit": model_meta.get("git_commit", ""), "sample_rate": int(sample_rate),
            "samples": int(samples), "stream": stream, "settings": settings, **extra}


Checks = Callable[[cfgmod.GenerateConfig, object, np.ndarray, list[str]], dict[str, dict]]


def run(cfg: cfgmod.GenerateConfig, checks: Checks | None = None) -> int:
    """The ``generate`` stage: model folder in, WAV file(s) out, with a sidecar JSON each (local or s3://).

    Files are written in the output folder's working copy and uploaded WAV first, sidecar second.
    ``checks(cfg, wavenet, codes, names)`` adds fields to each stream's sidecar, by file name
    (``generate --evaluate``'s memorisation check: :func:`waveforms.pipeline.generate`).
    """
    with OutputDir(storage.parent(cfg.output)) as out:
        return _run(cfg, out, checks)


def _run(cfg: cfgmod.GenerateConfig, out: OutputDir, checks: Checks | None) -> int:
    from tqdm import tqdm

    from waveforms.model import load  # TensorFlow

    if cfg.streams < 1 or cfg.seconds <= 0:
        raise UserError("--streams must be >= 1 and --seconds > 0")
    if cfg.evaluate and checks is None:
        raise UserError("--evaluate needs the memorisation check: run generate as waveforms.pipeline.generate "
                        "(the CLI does)")
    wavenet = load(cfg.model)
    prime = load_prime(cfg.prime, wavenet) if cfg.prime else None
    n = int(round(cfg.seconds * wavenet.sample_rate))
    paths = stream_paths(cfg.output, cfg.streams)
    names = [storage.basename(p) for p in paths]
    save_every = int(cfg.save_every * wavenet.sample_rate) if cfg.save_every > 0 else 0
    state = {"saved": 0}
    bar = tqdm(total=n * cfg.streams, unit="sample", unit_scale=True, desc="generate", smoothing=0.1)
    started = time.perf_counter()

    def save(codes: np.ndarray, done: int) -> None:
        for k, name in enumerate(names):
            write_wav(out.path(name), codes[k, :done], wavenet.sample_rate, wavenet.mu)
        out.upload(*names)

    def on_chunk(codes: np.ndarray, done: int) -> None:
        bar.update(done * cfg.streams - bar.n)
        if save_every and done - state["saved"] >= save_every and done < n:
            save(codes, done)
            state["saved"] = done

    codes = generate(wavenet, n, prime=prime, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
                     streams=cfg.streams, genre=cfg.genre or None, on_chunk=on_chunk)
    bar.close()
    elapsed = time.perf_counter() - started
    save(codes, n)
    model = cfg.model if storage.is_s3(cfg.model) else str(Path(cfg.model).resolve())
    extra = checks(cfg, wavenet, codes, names) if checks else {}
    for k, name in enumerate(names):
        meta = sidecar(model, wavenet.meta, wavenet.sample_rate, n, cfgmod.to_dict(cfg), k,
                       samples_per_s=round(n * cfg.streams / elapsed, 1), **extra.get(name, {}))
        write_text(str(out.path(name)) + ".json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    out.upload(*(name + ".json" for name in names))
    rate = n * cfg.streams / elapsed
    log.info("wrote %s (%.1f s x %d streams, %.0f samples/s, %.2fx real time)", ", ".join(map(str, paths)),
             cfg.seconds, cfg.streams, rate, rate / wavenet.sample_rate)
    print(f"generated audio: {', '.join(map(str, paths))}")
    return 0
