"""Sampling settings judged on trained models: Fréchet mel distance, silence, and bits per sample of the output.

For each model (``--model NAME=PATH``, repeatable) and each setting (``--settings``, ``T/P`` pairs of
temperature and top-p), ``--clips`` clips of ``--seconds`` seconds are generated from one seed, as one batch
of streams, and judged by:

- fd_mel: the Fréchet mel distance of the clips' one-second log-mel frames to the model's dataset's
  held-out audio (the evaluate stage's statistics), and its spread: the standard deviation over
  ``--boots`` bootstrap resamples of the clips;
- silent: the share of 100 ms blocks whose RMS is below -40 dBFS (greedy or cold sampling collapses
  into silence);
- bits/sample: the output's own negative log-likelihood under the model (teacher-forced, targets whose
  receptive field lies inside the clip), in bits.

References measured in the same run, per dataset: the held-out audio's two halves (even and odd
seconds) against each other, and white noise against the held-out audio.

Usage: python bench/bench_sampling.py --model small=bench/out/sampling-models/small-10/new
       [--settings 1/1,0.95/1,0.9/1,0.8/1,1/0.98,1/0.95,1/0.9] [--clips 8] [--seconds 10] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
SILENT_DBFS = -40.0


def silent_share(codes: np.ndarray, sample_rate: int, mu: int) -> float:
    """The share of 100 ms blocks of ``codes`` (streams, n) whose RMS is below SILENT_DBFS."""
    from waveforms.audio import mulaw

    block = sample_rate // 10
    n = codes.shape[1] // block * block
    audio = mulaw.decode(codes[:, :n], mu).reshape(codes.shape[0], -1, block)
    rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2, axis=-1))
    return float(np.mean(20 * np.log10(np.maximum(rms, 1e-12)) < SILENT_DBFS))


def own_bits(wavenet, codes: np.ndarray, chunk: int = 8000) -> float:
    """Mean bits per sample of ``codes`` (streams, n) under ``wavenet``, in windows of ``chunk`` targets."""
    from waveforms.evaluate.likelihood import window_nll

    rf = wavenet.receptive_field
    total, count = 0.0, 0
    for s in range(0, codes.shape[1] - rf - 1, chunk):
        window = codes[:, s: s + rf + chunk + 1].astype(np.int64)
        if window.shape[1] <= rf + 1:
            break
        nats, n = window_nll(wavenet, window, np.full(len(window), rf))
        total, count = total + nats, count + n
    return total / count / np.log(2)


def fd_spread(clips: np.ndarray, heldout, sample_rate: int, mu: int, boots: int, seed: int) -> tuple[float, float]:
    """fd_mel of all ``clips`` and the standard deviation of it over bootstrap resamples of the clips."""
    from waveforms.evaluate.frechet import GaussianStats, fd
    from waveforms.evaluate.report import second_frames

    frames = [second_frames(c, sample_rate, mu) for c in clips]

    def of(idx) -> float:
        stats = GaussianStats(frames[0].shape[-1])
        for i in idx:
            stats.update(frames[i])
        return fd(stats, heldout)

    rng = np.random.default_rng(seed)
    resampled = [of(rng.integers(0, len(clips), len(clips))) for _ in range(boots)]
    return of(range(len(clips))), float(np.std(resampled))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH", help="a trained model folder")
    ap.add_argument("--settings", default="1/1,0.95/1,0.9/1,0.8/1,1/0.98,1/0.95,1/0.9",
                    help="temperature/top-p pairs")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boots", type=int, default=50, help="bootstrap resamples of the clips for the spread")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from waveforms.dataset import Dataset
    from waveforms.evaluate.frechet import fd
    from waveforms.evaluate.report import clip_stats, heldout_stats, noise_codes
    from waveforms.model import load
    from waveforms.model.sampling import generate

    settings = [tuple(float(x) for x in s.split("/")) for s in args.settings.split(",")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"# bench_sampling: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit.strip()}, "
          f"{os.cpu_count()} CPUs; {args.clips} clips of {args.seconds:g} s per setting, seed {args.seed}, "
          f"spread = std over {args.boots} bootstrap resamples of the clips\n")
    print(f"\n{' '.join(sys.argv)}\n")
    print("| model | temperature | top-p | fd_mel (± spread) | silent share | bits/sample under the model "
          "| generation s |")
    print("|---|---|---|---|---|---|---|")
    references = []
    for item in args.model:
        name, _, path = item.partition("=")
        wavenet = load(path)
        ds = Dataset.open(wavenet.meta["dataset"])
        sr, mu = wavenet.sample_rate, wavenet.mu
        heldout, even, odd = heldout_stats(ds, 16000)
        noise = clip_stats({"noise": noise_codes(int(args.clips * args.seconds), sr, args.seed, mu)}, sr, mu)
        references.append((name, ds.root, fd(even, odd), fd(noise, heldout)))
        n = int(round(args.seconds * sr))
        for temperature, top_p in settings:
            t = time.perf_counter()
            codes = generate(wavenet, n, temperature=temperature, top_p=top_p, seed=args.seed, streams=args.clips)
            spent = time.perf_counter() - t
            value, spread = fd_spread(codes, heldout, sr, mu, args.boots, args.seed)
            print(f"| {name} | {temperature:g} | {top_p:g} | {value:,.0f} (± {spread:,.0f}) | "
                  f"{silent_share(codes, sr, mu):.2f} | {own_bits(wavenet, codes):.2f} | {spent:.0f} |", flush=True)
    print("\n| model | dataset | fd_mel: held-out halves | fd_mel: white noise |\n|---|---|---|---|")
    for name, root, halves, noise in references:
        print(f"| {name} | {root} | {halves:,.0f} | {noise:,.0f} |")


if __name__ == "__main__":
    main()
