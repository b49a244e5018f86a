"""The ``generate`` stage: a model folder in, WAV files and their sidecar JSON out (local or s3://).

It decodes the prime with :func:`waveforms.audio.load_prime`, samples with
:func:`waveforms.model.sampling.generate` and writes each stream with :mod:`waveforms.audio.clips`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from waveforms import config as cfgmod
from waveforms import storage
from waveforms.audio import load_prime
from waveforms.audio.clips import sidecar, write_wav
from waveforms.model.sampling import generate
from waveforms.runtime import progress
from waveforms.runtime.errors import UserError
from waveforms.storage import OutputDir, write_text

log = logging.getLogger(__name__)


def stream_paths(output: str, streams: int) -> list[str]:
    """``out.wav`` for one stream; ``out_0.wav``, ``out_1.wav``, ... for several (local or s3://)."""
    if streams == 1:
        return [str(output)]
    name = Path(storage.basename(str(output)))
    return [storage.join(storage.parent(str(output)), f"{name.stem}_{k}{name.suffix or '.wav'}")
            for k in range(streams)]


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
    from waveforms.model import load  # TensorFlow

    cfgmod.validate(cfg)  # the same checks as the CLI's (streams >= 1, seconds > 0), for configs built in Python
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
    bar = progress.Progress("generate", n * cfg.streams, "samples")  # a live line on a terminal, else plain lines
    started = time.perf_counter()

    def save(codes: np.ndarray, done: int) -> None:
        for k, name in enumerate(names):
            write_wav(out.path(name), codes[k, :done], wavenet.sample_rate, wavenet.mu)
        out.upload(*names)

    def on_chunk(codes: np.ndarray, done: int) -> None:
        bar.update(done * cfg.streams)
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
