"""Fine-tuning against training from scratch: the validation NLL on a new collection after the same short budget.

The parent is a model trained elsewhere (``--parent``, e.g. ``small`` on the hyperrogue soundtrack by
bench/bench_train_budget.py --keep). The new collection is the Pingus soundtrack (Debian's pingus-data:
Impulse Tracker and Scream Tracker modules, rendered by ffmpeg's libopenmpt), transformed once on local[2]
at the parent's sample rate into a dataset cached under bench/out/. Rows, each ``--minutes`` of training
on one process (the trainer fits its cosine schedule to the budget):

- scratch: the parent's preset from its initialisation, today's defaults;
- fine-tuned: ``--init-from`` the parent, today's defaults (a fresh optimizer, warmup and schedule);
- fine-tuned, lr X: the same at peak learning rate X (``--ft-lr``, repeatable).

Every final model is scored the same way: the mean NLL over the whole Pingus validation split
(``waveforms.evaluate.likelihood.val_nll``, windows of 8000 samples); the parent is scored there too
before any fine-tuning (zero-shot), as the reference.

Usage: python bench/bench_finetune.py --parent MODEL [--minutes 3] [--ft-lr 0.002]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PINGUS = Path("/usr/share/games/pingus/data/music")
SCORE_WINDOW = 8000


def rendered() -> Path:
    """The Pingus modules rendered to FLAC by ffmpeg's libopenmpt (once; those it cannot render are left out)."""
    out = OUT / "pingus-flac"
    kinds = (".it", ".s3m", ".xm", ".mod")
    modules = sorted(p for p in PINGUS.iterdir() if p.suffix in kinds) if PINGUS.is_dir() else []
    if not modules:
        raise SystemExit("no Pingus modules: apt-get install pingus-data")
    out.mkdir(parents=True, exist_ok=True)
    for module in modules:
        flac = out / f"{module.stem}.flac"
        if not flac.exists():
            part = out / f".{module.stem}.part.flac"
            done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(module), "-ac", "1",
                                   str(part)], capture_output=True, text=True)
            if done.returncode == 0:
                part.rename(flac)
            else:
                print(f"{module.name}: not rendered ({done.stderr.strip()[-200:]})", file=sys.stderr)
    return out


def pingus_dataset(env: dict[str, str], sample_rate: int) -> Path:
    """The Pingus soundtrack transformed at ``sample_rate`` (once; cached under bench/out/)."""
    data = OUT / f"pingus-dataset-{sample_rate}"
    if (data / "manifest.jsonl").exists():
        return data
    subprocess.run([sys.executable, "-m", "waveforms", "transform", "--input", str(rendered()), "--output", str(data),
                    "--master", "local[2]", "--set", f"sample_rate={sample_rate}", "--set", "val_fraction=0.15"],
                   env=env, check=True, cwd=ROOT)
    return data


def score(data: Path, model_dir: str) -> float:
    from waveforms.dataset import Dataset
    from waveforms.evaluate.likelihood import val_nll
    from waveforms.model import load

    return val_nll(load(model_dir), Dataset.open(str(data)), SCORE_WINDOW, batch_size=8)["val_nats"]


def train(data: Path, model_dir: str, minutes: float, extra: list[str], env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "waveforms", "train", "--data", str(data), "--model-dir", model_dir, "--steps",
           "100000000", "--set", f"max_minutes={minutes}", "--set", "val_every=250", "--set", "checkpoint_every=250",
           "--set", "val_batches=16", *extra]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    rows = [json.loads(x) for x in (Path(model_dir) / "metrics.jsonl").read_text().splitlines()]
    return {"steps": rows[-1]["step"], "wall": rows[-1]["wall_time"], "val": score(data, model_dir)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parent", required=True, help="the model to fine-tune (a model folder)")
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget of every row")
    ap.add_argument("--ft-lr", type=float, action="append", default=[], help="extra fine-tuning rows' peak lr")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from waveforms.model import load

    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "3"}
    parent = load(args.parent)
    data = pingus_dataset(env, parent.sample_rate)
    preset = parent.meta.get("preset", "small")
    rows = [("parent, zero-shot (no training on Pingus)", {"steps": 0, "wall": 0.0, "val": score(data, args.parent)})]
    runs = [("scratch", ["--preset", preset])] + [("fine-tuned", ["--init-from", args.parent])]
    runs += [(f"fine-tuned, lr {lr:g}", ["--init-from", args.parent, "--set", f"learning_rate={lr}"])
             for lr in args.ft_lr]
    for label, extra in runs:
        with tempfile.TemporaryDirectory(prefix="bench-finetune-") as model_dir:
            rows.append((label, train(data, model_dir, args.minutes, extra, env)))
        print(f"{label}: {rows[-1][1]}", file=sys.stderr, flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    trained = parent.meta.get("training") or {}
    print(f"# bench_finetune: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit.strip()}, "
          f"{os.cpu_count()} CPUs\n\nparent: {args.parent} ({preset}, {trained.get('steps')} steps, "
          f"{(trained.get('wall_time_s') or 0) / 60:.1f} min on {parent.meta.get('dataset')}); new data: {data}; "
          f"{args.minutes:g}-minute budget per row\n")
    print("| row | steps | val split NLL (nats) | bits/sample | vs scratch (nats) |\n|---|---|---|---|---|")
    scratch = rows[1][1]["val"]
    for label, r in rows:
        print(f"| {label} | {r['steps']} | {r['val']:.3f} | {r['val'] / math.log(2):.3f} | "
              f"{r['val'] - scratch:+.3f} |")


if __name__ == "__main__":
    main()
