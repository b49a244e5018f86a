"""Validation loss reached in a fixed wall-clock budget, per training recipe (and engine).

Trains the ``small`` preset on the full hyperrogue soundtrack (Debian's
hyperrogue-music: every decodable .ogg, at full length, about 20 minutes of
music), transformed once on local[2] into a dataset cached under bench/out/,
for BUDGET minutes per row, one row after the other, and prints the final
validation loss of each (nats and bits per sample) as a markdown table with
the machine's load average around each run.

Rows (``--recipe``, repeatable; default: baseline and new):
  baseline the code before the training rewrite (commit BASELINE, extracted with ``git archive`` under bench/out/)
           at its own defaults: the padded training model, constant lr 1e-3, clip 1.0, no EMA, Keras init
  before-precision
           the code before the precision key and the budget's refit (commit BEFORE_PRECISION, extracted the
           same way) at its own defaults
  old      that recipe as config overrides of today's code (today's faster training model)
  old-window-4000
           the same at the earlier default window (the training model's speed alone)
  new      today's defaults
  window-4000
           today's defaults at the earlier default window
  no-warmup-decay, clip-1, no-ema, keras-init, lr-1e-3
           the new defaults with one change undone (the ablation)
  lr-2e-3, lr-4e-3, lr-1.2e-2
           the new defaults with another peak learning rate
  wide, batch-4, wide-lr-1.2e-2
           the new defaults at the default preset's channel widths, with batches of 4, or wide at lr 1.2e-2
  window-1000, cycles-4x4, skip-128, ema-0.99, window-1000-wide-lr-1.2e-2
           the new defaults with windows of 1000, small's 16 layers as 4 dilation cycles of 1..8, skip
           channels 128, a moving average of 0.99, or windows of 1000 with wide at lr 1.2e-2
  rf-1023, rf-2047
           the new defaults with 2 stacks of 1..256 or 1..512 (small's widths, a longer receptive field)
  seed-1, bfloat16, auto
           the new defaults with seed 1 (the noise), in bfloat16, in the precision ``auto`` picks; the
           quality check of bfloat16 at a fixed step count: ``--steps 1000 --minutes 600 --recipe new
           --recipe seed-1 --recipe bfloat16`` (the same steps and batches; compare bfloat16 - new with
           seed-1 - new)
``--set KEY=VALUE`` (repeatable) applies to every row before the row's own
overrides (which win).

Every row's final model is scored the same way, by today's code: the mean
NLL over the whole validation split (``waveforms.evaluate.likelihood.val_nll``,
windows of 8000 samples), beside the run's own last validation check.
``--window`` and ``--batch-size`` apply to every row; without them each row
runs at its code's defaults.

Each row runs with ``--steps 100000000`` (or ``--steps N``) and
``max_minutes = BUDGET``: the budget ends it, and a cosine schedule is fitted
to the budget by the trainer itself (see ``max_minutes`` in docs/training.md). For
the elephas engine, whose schedule is not fitted, pass ``--steps``.

Usage: python bench/bench_train_budget.py [--minutes 10] [--recipe old --recipe new ...]
       [--data bench/out/hyperrogue-dataset] [--engine local|"elephas synchronous"|...] [--steps N]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
DATASET = OUT / "hyperrogue-dataset"
MUSIC_DIRS = ("/usr/share/games/hyperrogue", "/usr/share/hyperrogue/music", "/usr/share/hyperrogue")
ENGINES = {
    "local": [],
    "elephas synchronous": ["--engine", "elephas", "--mode", "synchronous"],
    "elephas asynchronous": ["--engine", "elephas", "--mode", "asynchronous"],
    "elephas hogwild": ["--engine", "elephas", "--mode", "hogwild", "--parameter-server", "socket"],
}
BASELINE = "48e1587"  # main before the unpadded training model and the new recipe
BEFORE_PRECISION = "9fd1d13"  # main before the precision key and the budget's refit to the pace
CODE_AT = {"baseline": BASELINE, "before-precision": BEFORE_PRECISION}  # rows that run an earlier commit's code
SCORE_WINDOW = 8000
WIDE = ["residual_channels=32", "dilation_channels=32", "skip_channels=128"]  # default's widths
OLD = ["learning_rate=0.001", "lr_schedule=constant", "warmup_steps=0", "clip_norm=1.0", "ema_decay=0", "init=keras"]
RECIPES = {
    "baseline": (f"baseline: the code at {BASELINE} (before the training rewrite), its defaults", []),
    "before-precision": (f"the code at {BEFORE_PRECISION} (before the precision key and the refit), its defaults",
                         []),
    "old": ("old: constant lr 1e-3, clip 1.0, no EMA, Keras init", OLD),
    "old-window-4000": ("old recipe, windows of 4000 (today's code: the faster training model alone)",
                        [*OLD, "window=4000"]),
    "new": ("new defaults", []),
    "window-4000": ("new, windows of 4000", ["window=4000"]),
    "no-warmup-decay": ("new, constant lr (no warmup, no decay)", ["lr_schedule=constant", "warmup_steps=0"]),
    "clip-1": ("new, clip 1.0", ["clip_norm=1.0"]),
    "no-ema": ("new, no EMA", ["ema_decay=0"]),
    "keras-init": ("new, Keras init", ["init=keras"]),
    "lr-1e-3": ("new, lr 1e-3", ["learning_rate=0.001"]),
    "lr-2e-3": ("new, lr 2e-3", ["learning_rate=0.002"]),
    "lr-4e-3": ("new, lr 4e-3", ["learning_rate=0.004"]),
    "lr-1.2e-2": ("new, lr 1.2e-2", ["learning_rate=0.012"]),
    "seed-1": ("new, seed 1 (the run-to-run noise beside new)", ["seed=1"]),
    "bfloat16": ("new, bfloat16 compute", ["precision=bfloat16"]),
    "auto": ("new, the precision auto picks here", ["precision=auto"]),
    "wide": ("new, channels 32/32/128 (default's widths at small's depth)", WIDE),
    "batch-4": ("new, batches of 4", ["batch_size=4"]),
    "wide-lr-1.2e-2": ("new, channels 32/32/128 and lr 1.2e-2", [*WIDE, "learning_rate=0.012"]),
    "window-1000": ("new, windows of 1000", ["window=1000"]),
    "cycles-4x4": ("new, 4 stacks of 1..8 (small's 16 layers, receptive field 61)", ["stacks=4", "layers_per_stack=4"]),
    "skip-128": ("new, skip channels 128", ["skip_channels=128"]),
    "ema-0.99": ("new, moving average 0.99", ["ema_decay=0.99"]),
    "rf-1023": ("new, 2 stacks of 1..256 (18 layers, receptive field 1023)", ["layers_per_stack=9"]),
    "rf-2047": ("new, 2 stacks of 1..512 (20 layers, receptive field 2047)", ["layers_per_stack=10"]),
    "window-1000-wide-lr-1.2e-2": ("new, windows of 1000, channels 32/32/128 and lr 1.2e-2",
                                   ["window=1000", *WIDE, "learning_rate=0.012"]),
}


def music_dir() -> Path:
    for d in MUSIC_DIRS:
        if any(Path(d).rglob("*.ogg")):
            return Path(d)
    try:
        files = subprocess.run(["dpkg", "-L", "hyperrogue-music"], capture_output=True, text=True, check=False).stdout.split()
        oggs = [Path(f) for f in files if f.endswith(".ogg")]
        if oggs:
            return oggs[0].parent
    except OSError:
        pass
    raise SystemExit("no hyperrogue .ogg files: apt-get install hyperrogue-music")


def build_dataset(env: dict[str, str]) -> Path:
    """Transform every track of the soundtrack on local[2] (once; cached under bench/out/)."""
    if (DATASET / "manifest.jsonl").exists():
        return DATASET
    src = music_dir()
    print(f"transforming {src} into {DATASET} (local[2])", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "waveforms", "transform", "--input", str(src), "--output", str(DATASET),
                    "--master", "local[2]", "--set", "val_fraction=0.15"], env=env, check=True)
    return DATASET


def code_at(commit: str) -> Path:
    """The package as it was at ``commit``, extracted once under bench/out/ (run from there, it shadows ours)."""
    src = OUT / f"baseline-{commit}"
    if not (src / "waveforms" / "__main__.py").exists():
        tmp = OUT / f"baseline-{commit}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "waveforms"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        shutil.rmtree(src, ignore_errors=True)
        tmp.rename(src)
    return src


def score(data: Path, model_dir: str) -> float:
    """Mean NLL (nats) of the saved model over the whole validation split, by today's code."""
    from waveforms.evaluate.likelihood import val_nll
    from waveforms.model import load
    from waveforms.dataset import Dataset

    return val_nll(load(model_dir), Dataset.open(str(data)), SCORE_WINDOW, batch_size=8)["val_nats"]


def train(args, data: Path, model_dir: str, overrides: list[str], engine: list[str], steps: int,
          env: dict[str, str], commit: str = "") -> dict:
    cmd = [sys.executable, "-m", "waveforms", "train", "--data", str(data.resolve()), "--model-dir", model_dir,
           "--preset", args.preset, "--steps", str(steps), "--epochs", "100000", "--master", "local[2]",
           "--workers", "2", "--set", f"max_minutes={args.minutes}", "--set", f"val_batches={args.val_batches}",
           "--set", f"val_every={args.val_every}", "--set", f"checkpoint_every={args.val_every}", *engine]
    cmd += ["--window", str(args.window)] if args.window else []
    cmd += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    cmd += [] if commit else ["--set", f"elephas.windows_per_worker={args.windows_per_worker}"]
    for o in overrides:
        cmd += ["--set", o]
    load0 = os.getloadavg()[0]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=code_at(commit) if commit else ROOT)
    load1 = os.getloadavg()[0]
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    metrics = [json.loads(x) for x in (Path(model_dir) / "metrics.jsonl").read_text().splitlines()]
    last_val = [m for m in metrics if "val_loss" in m][-1]
    preview_s = sum(m.get("preview_s", 0.0) for m in metrics)
    return {"steps": metrics[-1]["step"], "wall": metrics[-1]["wall_time"], "run_val": last_val["val_loss"],
            "val": score(data, model_dir),
            "preview_share": preview_s / max(metrics[-1]["wall_time"], 1e-9),
            "previews": sum(1 for m in metrics if "preview" in m), "load": (load0, load1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="", help="a transformed dataset (default: the hyperrogue soundtrack)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--window", type=int, default=0, help="every row's window; 0 = each code's default")
    ap.add_argument("--batch-size", type=int, default=0, help="every row's batch size; 0 = each code's default")
    ap.add_argument("--steps", type=int, default=100_000_000, help="steps for every row (the budget ends it first)")
    ap.add_argument("--val-batches", type=int, default=16)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--windows-per-worker", type=int, default=96, help="elephas: windows per worker and epoch")
    ap.add_argument("--recipe", action="append", choices=list(RECIPES), help="rows (repeatable; default baseline, new)")
    ap.add_argument("--engine", default="local", choices=list(ENGINES))
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                    help="a train config override for every row (a row's own overrides win)")
    ap.add_argument("--keep", default="", help="copy each row's model folder under this folder")
    args = ap.parse_args()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "3"}
    data = Path(args.data) if args.data else build_dataset(env)
    if not (data / "manifest.jsonl").exists():
        raise SystemExit(f"no dataset at {data}")
    steps = args.steps
    rows = []
    for key in args.recipe or ["baseline", "new"]:
        label, overrides = RECIPES[key]
        with tempfile.TemporaryDirectory() as model_dir:
            r = train(args, data, model_dir, [*args.sets, *overrides], ENGINES[args.engine], steps, env,
                      commit=CODE_AT.get(key, ""))
            if args.keep:
                shutil.copytree(model_dir, Path(args.keep) / key, dirs_exist_ok=True)
        rows.append((label, r))
        print(f"{label}: {json.dumps(r)}", file=sys.stderr, flush=True)
    first = rows[0][1]["val"]
    window = f"window {args.window}" if args.window else "each code's default window"
    batch = f"batch {args.batch_size}" if args.batch_size else "default batch"
    print(f"\n{args.engine}, {args.preset} preset, {window}, {batch}, "
          f"{args.minutes:g}-minute budget per row{f', {steps} steps' if steps < 100_000_000 else ''}, {os.cpu_count()} cores"
          f"{', --set ' + ' '.join(args.sets) if args.sets else ''}\n")
    print(f"| recipe | steps | wall s | val split NLL (nats) | bits/sample | vs {rows[0][0].split(':')[0]} (nats) "
          "| run's last val check (nats) | previews (share of time) | load avg before / after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in rows:
        prev = f"{r['previews']} ({100 * r['preview_share']:.1f}%)" if r["previews"] else "-"
        print(f"| {label} | {r['steps']} | {r['wall']:.0f} | {r['val']:.3f} | {r['val'] / math.log(2):.3f} "
              f"| {r['val'] - first:+.3f} | {r['run_val']:.3f} | {prev} | {r['load'][0]:.1f} / {r['load'][1]:.1f} |")


if __name__ == "__main__":
    main()
