"""One benchmark under two Python environments in one run: the main stack against another.

For a stack upgrade: the other environment holds the stack before it (``.elephas`` holds
TensorFlow 2.19.1, NumPy 1.26.4, numba 0.61.2 and SciPy 1.14.1, the main pins before 2.21,
2.4.6, 0.68.1 and 1.17.1), and this runs the benchmark under each in turn, alternating
(other, main, other, main, ... for ``--rounds``), so both see the same machine state. Each
benchmark's own reference (the sgemm rate, the naive generator) is measured in the same
process as its figures, so the ratios compare across stacks. Prints each run's versions
and its table.

Usage: python bench/bench_stacks.py [--other .elephas/bin/python] [--rounds 2] [-- bench/bench_train.py [ARGS]]
(without a benchmark: bench/bench_train.py --presets small,default)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("import importlib.metadata as m, platform; "
            "print(' '.join(f'{p}=' + m.version(p) for p in ('tensorflow-cpu', 'keras', 'numpy', 'numba', 'scipy', "
            "'pyspark')) + ' python=' + platform.python_version())")


def versions(python: str) -> str:
    done = subprocess.run([python, "-c", VERSIONS], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or done.stderr.strip()[-300:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--other", default=str(ROOT / ".elephas" / "bin" / "python"), help="the other stack's Python")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("bench", nargs=argparse.REMAINDER, help="-- the benchmark script and its arguments")
    args = ap.parse_args(argv)
    bench = [a for a in args.bench if a != "--"] or ["bench/bench_train.py", "--presets", "small,default"]
    if not os.access(args.other, os.X_OK):
        ap.error(f"--other {args.other} is not an interpreter (make setup builds .elephas)")
    stacks = {"other": args.other, "main": sys.executable}
    env = {**os.environ, "PYTHONPATH": ""}
    for name, python in stacks.items():
        print(f"# {name}: {python}: {versions(python)}", flush=True)
    for r in range(1, args.rounds + 1):
        for name, python in stacks.items():
            t0 = time.perf_counter()
            done = subprocess.run([python, *bench], cwd=ROOT, env=env, capture_output=True, text=True)
            print(f"\n## round {r}, {name} stack ({time.perf_counter() - t0:.0f} s, exit {done.returncode})\n",
                  flush=True)
            print(done.stdout if done.returncode == 0 else done.stdout[-2000:] + done.stderr[-3000:], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
