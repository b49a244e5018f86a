"""Generation speed: cached (fast) vs naive sampling, per preset and stream count; and start-up time.

Prints a markdown table of samples/s and × real time at each preset's 16 kHz.
The row "1 (GEMM)" runs one stream with the many-stream path's products (one
BLAS GEMM per layer) instead of loops, with the one-stream row as its reference.
With --startup, instead: time to the first sample in fresh processes sharing one
new numba cache folder (the first compiles the kernels, the second loads them),
separately from the steady rate.
Usage: python bench/bench_generate.py [--seconds S] [--naive-samples N] [--startup]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))

import numpy as np  # noqa: E402

from helpers.naive import naive_generate  # noqa: E402
from waveforms.model import build, fastgen  # noqa: E402
from waveforms.model.sampling import generate  # noqa: E402


def rate(fn, samples: int) -> float:
    start = time.perf_counter()
    fn()
    return samples / (time.perf_counter() - start)


def startup_child(preset: str, seconds: float) -> None:
    """In a fresh process: seconds to the first sample (kernels compiled or loaded), then the steady rate."""
    w = build(preset)
    rng = np.random.default_rng(0)
    w.keras_model.set_weights([rng.normal(0, 0.05, a.shape).astype("float32") for a in w.keras_model.get_weights()])
    start = time.perf_counter()
    generate(w, 1, seed=0)
    first = time.perf_counter() - start
    n = int(seconds * w.sample_rate)
    print(json.dumps({"first_sample_s": first, "samples_per_s": rate(lambda: generate(w, n, seed=0), n)}))


def startup(presets: list[str], seconds: float) -> None:
    print("| preset | process | numba cache | time to first sample (s) | steady samples/s (1 stream) |")
    print("|---|---|---|---|---|")
    for preset in presets:
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            for which, state in (("first", "cold (compiles)"), ("second", "warm (loads)")):
                out = subprocess.run([sys.executable, __file__, "--child", preset, "--seconds", str(seconds)],
                                     env=env, capture_output=True, text=True, check=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"| {preset} | {which} | {state} | {r['first_sample_s']:.2f} | {r['samples_per_s']:,.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0, help="audio seconds per stream for the fast path")
    ap.add_argument("--naive-samples", type=int, default=40)
    ap.add_argument("--presets", default="small,default,large")
    ap.add_argument("--startup", action="store_true", help="time to first sample, cold and warm numba cache")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return startup_child(args.child, args.seconds)
    if args.startup:
        return startup(args.presets.split(","), args.seconds)
    rows = []
    for preset in args.presets.split(","):
        w = build(preset)
        rng = np.random.default_rng(0)
        w.keras_model.set_weights([rng.normal(0, 0.05, a.shape).astype("float32") for a in w.keras_model.get_weights()])
        sr = w.sample_rate
        generate(w, 100, streams=1)  # compile and warm up
        generate(w, 100, streams=64)
        naive = None
        if args.naive_samples and preset != "large":  # large: minutes per second of audio
            naive_generate(w, 2)
            naive = rate(lambda: naive_generate(w, args.naive_samples), args.naive_samples)
        one = 0.0
        for streams, label, block_min in ((1, "1", fastgen.BLOCK_MIN), (1, "1 (GEMM)", 1), (64, "64", fastgen.BLOCK_MIN)):
            n = int(args.seconds * sr) if streams == 1 else int(args.seconds * sr / 8)
            default_min, fastgen.BLOCK_MIN = fastgen.BLOCK_MIN, block_min
            try:
                generate(w, 100, streams=streams)  # compile and warm up this path
                fast = rate(lambda: generate(w, n, streams=streams, seed=0), n * streams)
            finally:
                fastgen.BLOCK_MIN = default_min
            one = one or fast
            rows.append((preset, w.receptive_field, label, fast, fast / sr, fast / one, naive if label == "1" else None))
    print("| preset | receptive field | streams | fast samples/s | × real time (16 kHz) | / 1 stream "
          "| naive samples/s | fast / naive |")
    print("|---|---|---|---|---|---|---|---|")
    for preset, rf, label, fast, rt, rel, naive in rows:
        naive_s = f"{naive:,.1f}" if naive else "-"
        ratio = f"{fast / naive:,.0f}×" if naive else "-"
        print(f"| {preset} | {rf} | {label} | {fast:,.0f} | {rt:.2f} | {rel:.2f} | {naive_s} | {ratio} |")


if __name__ == "__main__":
    main()
