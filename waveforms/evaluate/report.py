"""The ``evaluate`` stage: ``evaluation.json`` and ``evaluation.png`` for a model (or some WAVs).

JSON shape (``format = "waveforms-evaluation"``, ``format_version`` 2) is documented in
docs/evaluation.md; the studio reads it with :func:`upgraded`. Version 1 named
``format_version`` ``version`` and ``val_split_bits_per_sample`` ``val_bits_per_sample``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from waveforms import config as cfgmod
from waveforms import storage
from waveforms.audio import load_prime, mulaw
from waveforms.audio.clips import write_wav
from waveforms.dataset import Dataset, regions
from waveforms.evaluate import memorisation
from waveforms.evaluate.calibrate import PERCENTILE
from waveforms.evaluate.frechet import GaussianStats, fd
from waveforms.evaluate.index_format import index_uri, read_manifest
from waveforms.evaluate.likelihood import VAL_BITS, val_nll
from waveforms.evaluate.mel import MelParams, log_mel
from waveforms.model.sampling import generate
from waveforms.runtime import progress
from waveforms.runtime.errors import UserError
from waveforms.storage import OutputDir, versions

log = logging.getLogger(__name__)

FORMAT = "waveforms-evaluation"
FORMAT_VERSION = 2
RENAMED = {"val_bits_per_sample": VAL_BITS}  # format_version 1's names (also in model.json's evaluation)
JSON_FILE = "evaluation.json"
PNG_FILE = "evaluation.png"
BLOCK_S = 60


def second_frames(codes: np.ndarray, sample_rate: int, mu: int = 255) -> np.ndarray:
    """Log-mel frames of every whole second of ``codes``: ``(seconds, frames, n_mels)``."""
    n = len(codes) // sample_rate
    audio = mulaw.decode(np.asarray(codes[: n * sample_rate]), mu).reshape(n, sample_rate)
    return log_mel(audio, MelParams(sample_rate))


def heldout_stats(ds: Dataset, window: int, cap_s: float = 0.0) -> tuple[GaussianStats, GaussianStats, GaussianStats]:
    """Log-mel statistics of the held-out audio: all of it, and its even and odd seconds (the two halves)."""
    sr, dims = ds.sample_rate, MelParams(ds.sample_rate).n_mels
    every, even, odd = GaussianStats(dims), GaussianStats(dims), GaussianStats(dims)
    seconds = 0
    _, val, _ = regions(ds, window)
    for r in sorted(val, key=lambda r: (str(r.track["id"]), r.start)):
        for a in range(r.start, r.end - sr + 1, BLOCK_S * sr):
            n = min(BLOCK_S * sr, r.end - a) // sr * sr
            frames = second_frames(ds.read_window(r.track, a, n), sr, ds.mu)
            every.update(frames)
            even.update(frames[(seconds + np.arange(len(frames))) % 2 == 0])
            odd.update(frames[(seconds + np.arange(len(frames))) % 2 == 1])
            seconds += len(frames)
            if cap_s and seconds >= cap_s:
                return every, even, odd
    if every.n == 0:
        raise UserError(f"{ds.root} has no held-out audio for fd_mel")
    return every, even, odd


def noise_codes(seconds: int, sample_rate: int, seed: int, mu: int = 255) -> np.ndarray:
    """White Gaussian noise (RMS 0.25), mu-law coded like everything else."""
    rng = np.random.default_rng(seed)
    return mulaw.encode(np.clip(rng.normal(0.0, 0.25, seconds * sample_rate), -1, 1), mu)


def clip_stats(clips: dict[str, np.ndarray], sample_rate: int, mu: int) -> GaussianStats:
    stats = GaussianStats(MelParams(sample_rate).n_mels)
    for codes in clips.values():
        stats.update(second_frames(codes, sample_rate, mu))
    return stats


def load_clips(cfg: cfgmod.EvaluateConfig, wavenet, out: OutputDir) -> dict[str, np.ndarray]:
    """The audio judged: ``--audio`` files decoded like training data, or clips generated (and saved)."""
    if cfg.audio:
        return {storage.basename(p): load_prime(p, wavenet) for p in cfg.audio}
    n = int(round(cfg.seconds * wavenet.sample_rate))
    codes = generate(wavenet, n, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed, streams=cfg.clips)
    clips = {}
    for k in range(cfg.clips):
        name = f"evaluation_{k}.wav"
        write_wav(out.path(name), codes[k], wavenet.sample_rate, wavenet.mu)
        out.upload(name)
        clips[name] = codes[k]
    return clips


def memorisation_section(index: str, clips: dict[str, np.ndarray], sample_rate: int, mu: int) -> dict[str, Any]:
    """The memorisation check of ``clips``; without an index, nulls (and a warning). An index of another
    embedding is an error (rebuild it)."""
    if read_manifest(index) is None:
        log.warning("memorisation not checked: no index at %s (run `waveforms index`)", index)
        return {"threshold": None, "threshold_percentile": PERCENTILE, "margin": None, "negative": {},
                "match_fraction": None, "seconds": []}
    return memorisation.check(memorisation.LoadedIndex.open(index), clips, sample_rate, mu)


PHASES = ("validation bits per sample", "clips", "Fréchet mel distance", "memorisation")


def evaluate(cfg: cfgmod.EvaluateConfig, out: OutputDir) -> dict[str, Any]:
    """Compute every field of evaluation.json (and write the generated clips into ``out``)."""
    from waveforms.model import load  # TensorFlow

    wavenet = load(cfg.model)
    data = cfg.data or wavenet.meta.get("dataset", "")
    if not data:
        raise UserError("no --data given and model.json names no dataset")
    ds = Dataset.open(data)
    if ds.sample_rate != wavenet.sample_rate:
        raise UserError(f"the model runs at {wavenet.sample_rate} Hz but {data} holds {ds.sample_rate} Hz audio")
    if cfg.window <= wavenet.receptive_field:
        raise UserError(f"window ({cfg.window}) must exceed the receptive field ({wavenet.receptive_field})")
    sr, mu = wavenet.sample_rate, wavenet.mu
    with progress.Progress("evaluate", len(PHASES), "phases", every_s=0, eta=False) as phases:
        phases.update(0, status=PHASES[0])
        nll = val_nll(wavenet, ds, cfg.window, cfg.batch_size)
        phases.update(1, status=PHASES[1])
        clips = load_clips(cfg, wavenet, out)
        phases.update(2, status=PHASES[2])
        heldout, even, odd = heldout_stats(ds, cfg.window, cfg.heldout_seconds)
        generated = clip_stats(clips, sr, mu)
        seconds = max(1, sum(len(c) for c in clips.values()) // sr)
        noise = clip_stats({"noise": noise_codes(seconds, sr, cfg.seed, mu)}, sr, mu)
        fd_mel = {"generated": fd(generated, heldout) if generated.n > 1 else None, "halves": fd(even, odd),
                  "noise": fd(noise, heldout), "frames_generated": generated.n, "frames_heldout": heldout.n}
        phases.update(3, status=PHASES[3])
        memorised = memorisation_section(cfg.index or index_uri(data), clips, sr, mu)
        phases.update(4, status="done", force=True)
    return {
        "format": FORMAT, versions.KEY: FORMAT_VERSION,
        "model_dir": cfg.model if storage.is_s3(cfg.model) else str(Path(cfg.model).resolve()),
        "dataset": data, "dataset_id": ds.dataset_id, **nll, "fd_mel": fd_mel, "memorisation": memorised,
        "clips": list(clips), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Fréchet distances (log scale) and the per-second similarity to the nearest training window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    f = result["fd_mel"]
    names = ["halves (real)", "generated", "noise"]
    values = [f["halves"], f["generated"] or 0.0, f["noise"]]
    a.bar(names, values, color=["tab:green", "tab:blue", "tab:grey"])
    a.set_yscale("symlog")
    a.set_ylabel("Fréchet mel distance to held-out audio")
    a.set_title(f"val split {result[VAL_BITS]:.3f} bits/sample")
    mem = result["memorisation"]
    for clip in result["clips"]:
        rows = [s for s in mem["seconds"] if s["clip"] == clip and s["similarity"] is not None]
        b.plot([s["second"] for s in rows], [s["similarity"] for s in rows], "o-", label=clip)
    if mem["threshold"] is not None:
        b.axhline(mem["threshold"], color="red", linestyle=":", label=f"match threshold ({mem['threshold']:.3f})")
    b.set_xlabel("second of clip")
    b.set_ylabel("cosine similarity to nearest training window")
    b.legend(fontsize=7)
    fig.tight_layout()
    with storage.atomic_local(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def upgraded(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """An evaluation (``evaluation.json``, or the copy in ``model.json``) under today's key names;
    :class:`~waveforms.storage.versions.NewerFormat` naming ``where`` when a newer waveforms wrote it."""
    versions.check(doc, where, FORMAT_VERSION)
    return versions.renamed(doc, {**RENAMED, versions.OLD_KEY: versions.KEY})


def write(result: dict[str, Any], out: OutputDir) -> None:
    """evaluation.png, then evaluation.json (last)."""
    plot(result, out.path(PNG_FILE))
    out.upload(PNG_FILE)
    storage.write_text(str(out.path(JSON_FILE)), json.dumps(result, indent=2) + "\n")
    out.upload(JSON_FILE)


def run(cfg: cfgmod.EvaluateConfig) -> int:
    with OutputDir(cfg.output or cfg.model) as out:
        result = evaluate(cfg, out)
        write(result, out)
    f, m = result["fd_mel"], result["memorisation"]
    print(f"evaluation: {storage.join(cfg.output or cfg.model, JSON_FILE)}: val split {result[VAL_BITS]:.4f} "
          f"bits/sample; fd_mel generated {f['generated']:.2f} (halves {f['halves']:.2f}, noise {f['noise']:.2f}); "
          f"memorised seconds {m['match_fraction']}"
          + (f" (copies >= {m['margin']['copy_min']}, controls <= {m['margin']['negative_max']}, margin "
             f"{m['margin']['margin']})" if m.get("margin") else ""))
    return 0
