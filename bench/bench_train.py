"""Training throughput: the local engine vs elephas on Spark local[N] in each mode.

Same model (``default`` preset unless --preset), window and batch for every
engine. Throughput is predicted samples per second (batch × window per step):
for the local engine over the steps after a warm-up, for elephas over the last
epoch (the first one also pays for starting the executors' TensorFlow). Each
run is a fresh process; a sampler reads /proc to record the peak RSS of the
driver (the training process) and the largest executor-side Python process.

Usage: python bench/bench_train.py [--preset default] [--window 2000] [--batch-size 4]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))


def _proc_tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def _rss_kib(pid: int) -> tuple[int, str]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return 0, ""
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return rss, cmd


def measure(cmd: list[str]) -> tuple[dict, dict[str, int]]:
    """Run ``cmd`` (prints one JSON line last); return its result and peak RSS (KiB) by role."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peaks = {"driver": 0, "jvm": 0, "executor python": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            for pid in _proc_tree(proc.pid):
                rss, name = _rss_kib(pid)
                role = "driver" if pid == proc.pid else "jvm" if "java" in name else "executor python"
                peaks[role] = max(peaks[role], rss)
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed with {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), peaks


def one(args) -> None:
    """Child process: train once and print a JSON result."""
    from train_helpers import tone_dataset
    from waveforms.config import ElephasConfig, TrainConfig
    from waveforms.train import run

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = tone_dataset(tmp / "ds", n_tracks=4, seconds=20.0, sample_rate=16000)
    common = dict(data=str(data), model_dir=str(tmp / "model"), preset=args.preset, batch_size=args.batch_size,
                  window=args.window, seed=0)
    if args.one == "local":
        steps = args.warmup + args.steps
        run(TrainConfig(**common, steps=steps, log_every=1, val_every=10**9, checkpoint_every=10**9))
        rows = [json.loads(line) for line in (tmp / "model" / "metrics.jsonl").read_text().splitlines()]
        timed = rows[args.warmup:]
        seconds = sum(args.batch_size * args.window / r["samples_per_s"] for r in timed)
        rate = len(timed) * args.batch_size * args.window / seconds
    else:
        elephas = ElephasConfig(mode=args.one, master=f"local[{args.workers}]", workers=args.workers, epochs=2,
                                windows_per_worker=args.windows_per_worker)
        run(TrainConfig(**common, engine="elephas", elephas=elephas, val_batches=1))
        rows = [json.loads(line) for line in (tmp / "model" / "metrics.jsonl").read_text().splitlines()]
        rate = rows[-1]["samples_per_s"]
    print(json.dumps({"samples_per_s": rate}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--window", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="timed local steps")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--windows-per-worker", type=int, default=16)
    ap.add_argument("--engines", default="local,synchronous,asynchronous,hogwild")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args)
        return
    passthrough = [f"--preset={args.preset}", f"--window={args.window}", f"--batch-size={args.batch_size}",
                   f"--steps={args.steps}", f"--warmup={args.warmup}", f"--workers={args.workers}",
                   f"--windows-per-worker={args.windows_per_worker}"]
    results = []
    for engine in args.engines.split(","):
        result, peaks = measure([sys.executable, __file__, f"--one={engine}", *passthrough])
        results.append((engine, result["samples_per_s"], peaks))
    local_rate = next((r for e, r, _ in results if e == "local"), None)
    print(f"preset {args.preset}, window {args.window}, batch {args.batch_size}, "
          f"elephas on local[{args.workers}] with {args.workers} workers × {args.windows_per_worker} windows/epoch; "
          f"{os.cpu_count()} cores")
    print()
    print("| engine | mode | predicted samples/s | × local | driver peak RSS (MiB) | largest executor "
          "Python (MiB) | JVM (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for engine, rate, peaks in results:
        name, mode = ("local", "-") if engine == "local" else ("elephas", engine)
        ratio = f"{rate / local_rate:.2f}" if local_rate else "-"
        mib = {k: (f"{v / 1024:,.0f}" if v else "-") for k, v in peaks.items()}
        print(f"| {name} | {mode} | {rate:,.0f} | {ratio} | {mib['driver']} | {mib['executor python']} | "
              f"{mib['jvm']} |")


if __name__ == "__main__":
    main()
