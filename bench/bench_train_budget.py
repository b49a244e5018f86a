"""Validation loss reached in a fixed wall-clock budget, per training engine.

Trains the same preset on the same dataset (the demo's, by default) for
BUDGET minutes with the local engine and with elephas in each mode on
local[2], then prints the last validation loss of each (nats and bits per
sample) as a markdown table.
Usage: python bench/bench_train_budget.py [--data demo-out/dataset] [--minutes 20] [--preset small]
       [--windows-per-worker 96] [--engine local --engine "elephas synchronous" ...]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINES = [
    ("local", []),
    ("elephas synchronous", ["--engine", "elephas", "--mode", "synchronous"]),
    ("elephas asynchronous", ["--engine", "elephas", "--mode", "asynchronous"]),
    ("elephas hogwild", ["--engine", "elephas", "--mode", "hogwild", "--parameter-server", "socket"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "demo-out" / "dataset"))
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--window", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--windows-per-worker", type=int, default=96, help="elephas: windows per worker and epoch")
    ap.add_argument("--engine", action="append", choices=[name for name, _ in ENGINES],
                    help="run only these (repeatable; default: all)")
    args = ap.parse_args()
    if not (Path(args.data) / "manifest.jsonl").exists():
        raise SystemExit(f"no dataset at {args.data}: run `make demo` first or pass --data")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rows = []
    for name, extra in ENGINES:
        if args.engine and name not in args.engine:
            continue
        with tempfile.TemporaryDirectory() as model_dir:
            cmd = [sys.executable, "-m", "waveforms", "train", "--data", args.data, "--model-dir", model_dir,
                   "--preset", args.preset, "--window", str(args.window), "--batch-size", str(args.batch_size),
                   "--steps", "100000000", "--epochs", "100000", "--master", "local[2]", "--workers", "2",
                   "--set", f"max_minutes={args.minutes}", "--set", f"elephas.windows_per_worker={args.windows_per_worker}", *extra]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"{name} failed:\n{res.stderr[-3000:]}")
            metrics = [json.loads(x) for x in (Path(model_dir) / "metrics.jsonl").read_text().splitlines()]
            last_val = [m for m in metrics if "val_loss" in m][-1]
            rows.append((name, metrics[-1]["step"], metrics[-1]["wall_time"], last_val["val_loss"]))
    print(f"| engine | windows per worker and epoch | steps (batches of {args.batch_size}) | wall s "
          "| val loss (nats) | val bits/sample |")
    print("|---|---|---|---|---|---|")
    for name, steps, wall, val in rows:
        wpw = "-" if name == "local" else args.windows_per_worker
        print(f"| {name} | {wpw} | {steps} | {wall:.0f} | {val:.3f} | {val / math.log(2):.3f} |")


if __name__ == "__main__":
    main()
