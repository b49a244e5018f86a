"""Data-parallel scaling of the allreduce engine (and elephas), measured, then projected on paper.

Three tables, every figure a ratio against the one-worker run of the same invocation:

1. Fixed global batch (strong scaling): ``batch_size`` windows split among N
   ranks of the allreduce engine (1 CPU thread each, ``allreduce.threads=1``),
   N in --workers. Per N: the largest gap between its loss curve and N = 1's,
   seconds per step (median over the logged intervals after the first), the
   gradient all-reduce's seconds and bytes per step (timed by the ranks after
   training), and the systems efficiency t_1 / (N · t_N).
2. Growing global batch (weak scaling): ``batch_per_worker`` windows per rank,
   the learning rate scaled by each rule in --rules; elephas synchronous and
   asynchronous with the same windows per worker and step. L is the validation
   loss of the one-worker run at its last step; E_N = windows_1(L) / windows_N(L),
   windows counted at the validation checks (linearly interpolated).
3. Projection: wall-clock speed-up to L against one node, for N = 2..16 nodes,
   for each preset in --project-presets, on 10 and 25 Gbit/s. A step's compute
   is a + b × windows per rank, from the single-worker step times measured here
   (``train_on_batch``, batch --batch-size and batch 1, window --project-window,
   best of 3 after a warm-up): a fixed cost per step that does not shrink with a
   rank's share (table 4 found it), and b per window; with the fixed global
   batch a rank has batch / N windows (while it keeps one), with the growing
   batch it keeps its batch (the measured E_N; E of the largest measured N
   beyond it, an assumption). Plus a ring all-reduce of the float32 gradient:
   2 (N - 1) / N × bytes / bandwidth + 2 (N - 1) × 50 µs, plus --sync-s per step.
   Elephas's row: its measured E_N × N, communication free (an upper bound).

4. With ``--hosts 1,2,4``: the fixed global batch across emulated hosts (test/helpers/hosts.py, root
   only): each rank on a host of its own with ``--host-cpu`` cores and a link of each rate in
   ``--rates``; the data and the model on the cluster's S3 (host 0, with the master and the driver).
   Per N: seconds per step, the all-reduce's share of the step, t_1 / (N · t_N), the largest loss gap
   to N = 1, and beside them the projection for the same N, link and per-host step time (t_1 / N +
   the ring all-reduce of the measured bytes), then the corrected model: compute a + b × windows
   fitted on one-rank runs (``--alone`` times one rank on each N's share), the ring, and a
   synchronisation cost c per step (the mean of what the N > 1 runs show beyond the rest).
   One cluster of max(N) hosts runs every N in turn, ``--rounds`` times: each cell is the median
   over the rounds with its range, and the efficiency is each round's own ratio. With ``--alone``
   a table first times one rank on each share on one whole CPU with no quota, in rounds too: the
   bound compute alone sets with whole cores, beside the same bound on the hosts' quota.

The full run (``--full``): the small preset on the hyperrogue soundtrack
(bench/bench_train_budget.py builds it), window 2000, 2,000 steps, 50 fixed
validation batches. A reduced run: --steps, --window, --data, --val-batches.

Usage: python bench/bench_scaling.py [--full] [--data DIR | --synthetic] [--preset small] [--steps 40] [--window 500]
       [--batch-size 8] [--workers 1,2] [--rules none,sqrt,linear] [--elephas synchronous,asynchronous]
       [--project-presets small,default,large] [--master local[4]]
       [--hosts 1,2,4 --rates 1gbit,10gbit --host-cpu 0.3]   (root: emulated hosts)
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
ROOT = Path(__file__).resolve().parents[1]
LATENCY_S = 50e-6  # per ring hop


SYNTHETIC = ROOT / "bench" / "out" / "scaling-synthetic-dataset"


def synthetic_dataset() -> Path:
    """Six 20-second tracks, each a melody of four tones with vibrato, transformed on local[2] (built once)."""
    if (SYNTHETIC / "manifest.jsonl").exists():
        return SYNTHETIC
    from waveforms.demo.music import ffmpeg_mp3

    src = SYNTHETIC.parent / "scaling-synthetic-mp3"
    for i in range(6):
        f = 110 * 2 ** (i / 6)
        expr = (f"0.4*sin(2*PI*{f}*(1+floor(mod(t,2))*0.25+floor(mod(t,4)/2)*0.5)*t+3*sin(2*PI*5*t))"
                f"+0.2*sin(2*PI*{2 * f}*t)")
        ffmpeg_mp3(["-f", "lavfi", "-i", f"aevalsrc={expr.replace(',', chr(92) + ',')}:s=22050:d=20"], src / f"melody-{i}.mp3", 20)
    subprocess.run([sys.executable, "-m", "waveforms", "transform", "--input", str(src), "--output", str(SYNTHETIC),
                    "--master", "local[2]", "--set", "val_fraction=0.2"], cwd=ROOT, check=True)
    return SYNTHETIC


def rows(model_dir: Path) -> list[dict]:
    return [json.loads(r) for r in (model_dir / "metrics.jsonl").read_text().splitlines() if r.strip()]


def training(model_dir: Path) -> dict:
    return json.loads((model_dir / "model.json").read_text())["training"]


def train(args, out: Path, engine: list[str], sets: list[str]) -> Path:
    cmd = [sys.executable, "-m", "waveforms", "train", "--data", str(args.data), "--model-dir", str(out),
           "--preset", args.preset, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--window", str(args.window), "--seed", "0", "--fresh", *engine,
           "--set", "preview_every=-1", "--set", f"val_every={args.val_every}", "--set", f"log_every={args.log_every}",
           "--set", f"val_batches={args.val_batches}", "--set", f"checkpoint_every={args.steps}"]
    for s in sets:
        cmd += ["--set", s]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    print(f"  {out.name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return out


def step_seconds(model_dir: Path, batch: int, window: int) -> float:
    """Median seconds per step over the logged intervals after the first (which pays for tracing)."""
    rates = sorted(r["samples_per_s"] for r in rows(model_dir)[1:] if "samples_per_s" in r)
    return batch * window / rates[len(rates) // 2]


def windows_to(model_dir: Path, target: float, windows_per_step: float) -> float:
    """Training windows until the validation loss first reaches ``target`` (interpolated); inf if never."""
    points = [(0, math.inf)] + [(r["step"], r["val_loss"]) for r in rows(model_dir) if "val_loss" in r]
    for (s0, l0), (s1, l1) in zip(points, points[1:]):
        if l1 <= target:
            frac = 1.0 if not math.isfinite(l0) or l0 == l1 else (l0 - target) / (l0 - l1)
            return (s0 + frac * (s1 - s0)) * windows_per_step
    return math.inf


EXTRA_SETS: list[str] = []  # --set: train overrides for every run


def allreduce(n: int, master: str) -> list[str]:
    extra = [a for s in EXTRA_SETS for a in ("--set", s)]
    return ["--engine", "allreduce", "--workers", str(n), "--master", master, "--set", "allreduce.threads=1", *extra]


def strong(args, tmp: Path) -> dict[int, float]:
    print(f"\n## Fixed global batch {args.batch_size} ({args.preset}, window {args.window}, {args.steps} steps)\n")
    runs = {n: train(args, tmp / f"fixed-{n}", allreduce(n, args.master), []) for n in args.workers}
    ref = rows(runs[1])
    t1 = step_seconds(runs[1], args.batch_size, args.window)
    print("| N | windows per rank | max loss gap to N = 1 | s per step | all-reduce s per step | bytes per step "
          "| t_1 / (N t_N) |")
    print("|---|---|---|---|---|---|---|")
    times = {}
    for n, d in runs.items():
        gap = max(abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(ref, rows(d)) if "loss" in a)
        tn = times[n] = step_seconds(d, args.batch_size, args.window)
        meta = training(d)
        print(f"| {n} | {args.batch_size // n} | {gap:.2e} (relative) | {tn:.3f} | {meta['allreduce_s']:.4f} | "
              f"{meta['allreduce_bytes']:,} | {t1 / (n * tn):.2f} |")
    print("\nloss curves (training loss per logged interval):\n")
    print("| step | " + " | ".join(f"N = {n}" for n in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for i, r in enumerate(ref):
        print(f"| {r['step']} | " + " | ".join(f"{rows(d)[i]['loss']:.4f}" for d in runs.values()) + " |")
    return times


def weak(args, tmp: Path) -> dict[str, dict[int, float]]:
    b = args.batch_size
    print(f"\n## Growing global batch: {b} windows per worker (L = the N = 1 run's last validation loss)\n")
    one = train(args, tmp / "grow-1", allreduce(1, args.master), [f"batch_per_worker={b}"])
    target = [r["val_loss"] for r in rows(one) if "val_loss" in r][-1]
    w1 = windows_to(one, target, b)
    print(f"L = {target:.4f} nats, reached by N = 1 after {w1:.0f} windows\n")
    print("| engine | N | rule | val loss at the end | windows to L | E_N |")
    print("|---|---|---|---|---|---|")
    print(f"| allreduce | 1 | - | {target:.4f} | {w1:.0f} | 1.00 |")
    best: dict[str, dict[int, float]] = {}
    for n in [n for n in args.workers if n > 1]:
        for rule in args.rules:
            d = train(args, tmp / f"grow-{n}-{rule}", allreduce(n, args.master),
                      [f"batch_per_worker={b}", f"lr_scaling={rule}"])
            wn = windows_to(d, target, n * b)
            e = w1 / wn
            best.setdefault("allreduce", {})[n] = max(best.get("allreduce", {}).get(n, 0.0), e)
            last = [r["val_loss"] for r in rows(d) if "val_loss" in r][-1]
            print(f"| allreduce | {n} | {rule} | {last:.4f} | {wn:.0f} | {e:.2f} |")
        for mode in args.elephas:
            epochs = max(1, args.steps // args.elephas_steps_per_epoch)
            d = train(args, tmp / f"elephas-{mode}-{n}", [
                "--engine", "elephas", "--mode", mode, "--workers", str(n), "--master", args.master,
                "--epochs", str(epochs)], [f"elephas.windows_per_worker={b * args.elephas_steps_per_epoch + 1}"])
            per_epoch = n * (b * args.elephas_steps_per_epoch + 1)
            vals = [(r["epoch"], r["val_loss"]) for r in rows(d) if "val_loss" in r]
            wn = math.inf
            for (e0, l0), (e1, l1) in zip([(0, math.inf)] + vals, vals):
                if l1 <= target:
                    frac = 1.0 if not math.isfinite(l0) or l0 == l1 else (l0 - target) / (l0 - l1)
                    wn = (e0 + frac * (e1 - e0)) * per_epoch
                    break
            e = w1 / wn
            best.setdefault(f"elephas {mode}", {})[n] = e
            print(f"| elephas {mode} | {n} | - | {vals[-1][1]:.4f} | {wn:.0f} | {e:.2f} |")
    return best


def step_time(preset: str, batch: int, window: int) -> tuple[float, int]:
    """Seconds of one ``train_on_batch`` of ``preset`` here (best of 3 after a warm-up) and its gradient bytes."""
    import numpy as np

    from waveforms.config import TrainConfig
    from waveforms.model import build
    from waveforms.train.common import compile_model

    wavenet = build(preset)
    model = compile_model(wavenet.training_model(), TrainConfig(preset=preset))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, wavenet.receptive_field + window - 1)).astype(np.int32)
    y = rng.integers(0, 256, (batch, window)).astype(np.int32)
    model.train_on_batch(x, y)
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        best = min(best, time.perf_counter() - t)
    return best, int(sum(np.prod(v.shape) for v in model.trainable_variables) * 4)


def ring_seconds(n: int, nbytes: int, gbit: float) -> float:
    return 2 * (n - 1) / n * nbytes * 8 / (gbit * 1e9) + 2 * (n - 1) * LATENCY_S


def project(args, efficiency: dict[str, dict[int, float]]) -> None:
    measured = efficiency.get("allreduce", {})
    largest = max(measured) if measured else None
    print(f"\n## Projection: speed-up to L against one node (batch {args.batch_size}, window {args.project_window})\n")
    if largest is not None:
        print(f"E_N measured for N <= {largest}; beyond it E_{largest} = {measured[largest]:.2f} is assumed.\n")
    nodes = (2, 4, 8, 16)
    print("The corrected model (measured across emulated hosts): a rank's compute is a + b x windows, with a, "
          "the fixed cost of a step, measured here as the step time on one window minus b (from the step on "
          f"{args.batch_size}), plus the ring, plus --sync-s = {args.sync_s:g} s of synchronisation per step.\n")
    print("| preset | s per step (1 node) | fixed share a / t_1 | gradient MB | Gbit/s | "
          + " | ".join(f"N = {n}" for n in nodes) + " |")
    print("|---|---|---|---|---|" + "---|" * len(nodes))
    for preset in args.project_presets:
        t1, nbytes = step_time(preset, args.batch_size, args.project_window)
        t_one, _ = step_time(preset, 1, args.project_window)
        b = max(0.0, (t1 - t_one) / (args.batch_size - 1)) if args.batch_size > 1 else t1
        a = max(0.0, t1 - b * args.batch_size)
        for gbit in (10.0, 25.0):
            cells = []
            for n in nodes:
                step_n = a + b * args.batch_size / n + ring_seconds(n, nbytes, gbit) + args.sync_s
                fixed = t1 / step_n if args.batch_size >= n else 0.0
                e = measured.get(n, measured[largest] if largest else 0.0)
                grow = e * n * t1 / (t1 + ring_seconds(n, nbytes, gbit))
                cells.append(f"{max(fixed, grow):.2f}× ({'fixed' if fixed >= grow else 'grow'})")
            print(f"| {preset} | {t1:.3f} | {a / t1:.2f} | {nbytes / 1e6:.2f} | {gbit:g} | " + " | ".join(cells) + " |")
    for name, eff in efficiency.items():
        if name.startswith("elephas"):
            e = eff[max(eff)]
            print(f"| {name} (E_{max(eff)} = {e:.2f}, communication free) | | | | any | "
                  + " | ".join(f"{e * n:.2f}×" for n in nodes) + " |")


@dataclass
class HostRun:
    """One allreduce run across emulated hosts: what table 4 reads from it."""

    step_s: float
    allreduce_s: float
    nbytes: int
    agree_s: float
    losses: list[float]


def spread(values: list[float], digits: int = 3) -> str:
    """The median of ``values``, with their range when there are several."""
    med = f"{float(np.median(values)):.{digits}f}"
    return med if len(values) == 1 else f"{med} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def timing_sets(args) -> list[str]:
    """The overrides of a timed run: no previews, one validation batch at the end, one checkpoint."""
    return ["preview_every=-1", f"val_every={args.steps}", f"log_every={args.log_every}", "val_batches=1",
            f"checkpoint_every={args.steps}"]


def whole_core_step(args, windows: int, out: Path) -> float:
    """Seconds per step of one rank on ``windows`` windows, alone on one whole CPU (no quota, one TensorFlow
    thread), the allreduce engine's step as a host runs it: the compute a real host of one core does."""
    from waveforms.config.loading import load, to_json

    cfg = load("train", flags={"data": str(args.data), "model_dir": str(out / "model"), "preset": args.preset,
                               "steps": args.steps, "batch_size": windows, "window": args.window, "seed": 0},
               sets=timing_sets(args))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(to_json(cfg, "train"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WAVEFORMS_THREADS": "1"}
    env.pop("TF_CONFIG", None)
    cpu = str((os.cpu_count() or 1) - 1)
    done = subprocess.run(["taskset", "-c", cpu, sys.executable, "-m", "waveforms.train.rank", str(out / "config.json"),
                           str(out / "result.json")], env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise SystemExit(f"one rank on a whole core, {windows} windows, failed:\n{done.stderr[-3000:]}")
    return step_seconds(out / "model", windows, args.window)


def host_rounds(args, rate: str, period_us: int) -> tuple[dict[int, list[HostRun]], dict[int, list[float]]]:
    """Every N of ``--hosts`` (and with ``--alone`` one rank on each N's share), ``--rounds`` times in turn, on
    one cluster of max(N) hosts at ``rate``: the runs of a round share the machine's state, so their ratios
    hold where single runs minutes apart differ by a quarter on this machine."""
    import shutil

    from helpers import hosts as hostlib

    runs: dict[int, list[HostRun]] = {n: [] for n in args.hosts}
    alone: dict[int, list[float]] = {m: [] for m in args.hosts if m > 1 and args.alone}
    with hostlib.Cluster(workers=max(args.hosts), cpu=args.host_cpu, rate=rate, head_cpu=args.head_cpu,
                         period_us=period_us) as c:
        shutil.copytree(args.data, c.shared / "ds")
        env = {**c.env(c.head), "PYTHONPATH": str(ROOT)}
        sync = c.head.run([sys.executable, "-m", "waveforms", "aws", "sync", str(c.shared / "ds"),
                           f"s3://{hostlib.BUCKET}/ds"], env)
        if sync.returncode:
            raise SystemExit(sync.stderr[-3000:])

        def run(workers: int, batch: int, name: str) -> Path:
            cmd = [sys.executable, "-m", "waveforms", "train", "--data", f"s3://{hostlib.BUCKET}/ds",
                   "--model-dir", f"s3://{hostlib.BUCKET}/{name}", "--preset", args.preset, "--steps",
                   str(args.steps), "--batch-size", str(batch), "--window", str(args.window),
                   "--seed", "0", *allreduce(workers, c.master_url),
                   *(a for kv in timing_sets(args) for a in ("--set", kv))]
            t = time.perf_counter()
            done = c.head.run(cmd, env, timeout=3600)
            if done.returncode:
                raise SystemExit(f"N = {workers}, batch {batch} at {rate} failed:\n{done.stderr[-3000:]}")
            got = c.head.run([sys.executable, "-m", "waveforms", "aws", "sync", f"s3://{hostlib.BUCKET}/{name}",
                              str(c.shared / name)], env)
            if got.returncode:
                raise SystemExit(got.stderr[-3000:])
            print(f"  {rate} N = {workers}, batch {batch}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
            return c.shared / name

        for r in range(args.rounds):
            for n in args.hosts:
                d = run(n, args.batch_size, f"model-{r}-{n}")
                meta = training(d)
                runs[n].append(HostRun(step_seconds(d, args.batch_size, args.window), meta.get("allreduce_s", 0.0),
                                       int(meta.get("allreduce_bytes", 0)), meta.get("agree_s", 0.0),
                                       [row["loss"] for row in rows(d) if "loss" in row]))
            for m in alone:  # one rank alone on each larger N's share: compute without communication
                share = args.batch_size // m
                alone[m].append(step_seconds(run(1, share, f"alone-{r}-{m}"), share, args.window))
    return runs, alone


def whole_core_table(args) -> None:
    """The bound compute alone sets with whole cores: one rank on B and on each B/N windows, on one CPU with no
    quota, every share in turn, ``--rounds`` times; t(B) / (N t(B/N)) per round."""
    core: dict[int, list[float]] = {n: [] for n in args.hosts}
    with tempfile.TemporaryDirectory(prefix="bench-scaling-core-") as tmp:
        for r in range(args.rounds):
            for n in core:
                core[n].append(whole_core_step(args, args.batch_size // n, Path(tmp) / f"{r}-{n}"))
    first = min(core)
    print(f"\n## One rank on one whole core, no quota ({args.preset}, window {args.window}, {args.steps} steps, "
          f"{args.rounds} round(s)): the bound compute alone sets\n")
    print("| N | windows per rank | s per step | t(B) / (N t(B/N)) |")
    print("|---|---|---|---|")
    for n, ts in core.items():
        bound = [t1 / (n * t) for t1, t in zip(core[first], ts)]
        print(f"| {n} | {args.batch_size // n} | {spread(ts)} | {spread(bound, 2)} |")


def hosts_table(args) -> None:
    """Table 4: the fixed global batch across emulated hosts, measured, with the projection beside it."""
    if args.alone:  # needs no emulated hosts
        whole_core_table(args)
    sys.path.insert(0, str(ROOT / "test"))
    from helpers import hosts as hostlib

    why = hostlib.check()
    if why:
        print(f"\n## Across emulated hosts: not run ({why})")
        return
    if not args.rates:
        return
    period_us = int(args.cpu_period_ms * 1000) or hostlib.finest_period_us(min(args.host_cpu, args.head_cpu))
    print(f"\n## Across emulated hosts: fixed global batch {args.batch_size} ({args.preset}, window {args.window}, "
          f"{args.steps} steps, {args.host_cpu} core per host, quota period {period_us / 1000:g} ms, "
          f"{args.rounds} round(s) of every N on one cluster of {max(args.hosts)} hosts)\n")
    print("Each cell: the median over the rounds (the range). The efficiency is each round's own "
          "t_1 / (N t_N), so a slow phase of the machine, which slows every run of its round, cancels.\n")
    print("| link | N | s per step | all-reduce s per step (share) | one agreement s | t_1 / (N t_N) "
          "| max loss gap to N = 1 | one rank alone on B/N windows: s per step | projected s per step (efficiency) "
          "| corrected projection (efficiency) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate in args.rates:
        gbit = float(rate.rstrip("gbit")) if rate.endswith("gbit") else float(rate.rstrip("mbit")) / 1000
        runs, alone = host_rounds(args, rate, period_us)
        step = {n: float(np.median([x.step_s for x in rs])) for n, rs in runs.items()}
        solo = {m: float(np.median(ts)) for m, ts in alone.items()}
        reduce_s = {n: float(np.median([x.allreduce_s for x in rs])) for n, rs in runs.items()}
        first = min(runs)
        t1 = step[first]
        nbytes = max(x.nbytes for rs in runs.values() for x in rs)
        # The corrected model, from what these runs measure:
        #   compute a + b * windows per rank (a fixed cost per step), fitted on the one-rank runs;
        #   the ring 2 (N - 1) / N * bytes / bandwidth plus 2 (N - 1) hops of h each, h fitted on the
        #   all-reduce times the ranks measured (the paper model's 50 us per hop is far below a hop here);
        #   waiting for the slowest rank, s per hop, fitted on what the N > 1 steps show beyond the rest.
        points = [(args.batch_size, t1)] + [(args.batch_size // m, t) for m, t in solo.items()]
        if len(points) > 1:
            b, a = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
        else:
            a, b = 0.0, t1 / args.batch_size
        hops = {n: 2 * (n - 1) for n in runs}
        wire = {n: 2 * (n - 1) / n * nbytes * 8 / (gbit * 1e9) for n in runs}
        many = [n for n in runs if n > 1]
        h = float(np.mean([(reduce_s[n] - wire[n]) / hops[n] for n in many])) if many else LATENCY_S
        compute = {n: a + b * args.batch_size / n for n in runs}
        wait = float(np.mean([(step[n] - compute[n] - wire[n] - hops[n] * h) / hops[n] for n in many])) \
            if many else 0.0
        errors = []
        for n, rs in runs.items():
            tn = step[n]
            gap = max((abs(x - y) / x for r1, rn in zip(runs[first], rs) for x, y in zip(r1.losses, rn.losses)),
                      default=0.0)
            eff = [r1.step_s / (n * rn.step_s) for r1, rn in zip(runs[first], rs)]
            proj = t1 / n + ring_seconds(n, nbytes, gbit)
            corr = compute[n] + wire[n] + hops[n] * (h + wait)
            errors.append((n, proj / tn - 1, corr / tn - 1))
            print(f"| {rate} | {n} | {spread([x.step_s for x in rs])} | {reduce_s[n]:.4f} ({reduce_s[n] / tn:.0%}) | "
                  f"{float(np.median([x.agree_s for x in rs])):.4f} | {spread(eff, 2)} | {gap:.1e} | "
                  f"{spread(alone[n]) if n in alone else '-'} | "
                  f"{proj:.3f} ({t1 / (n * proj):.2f}) | {corr:.3f} ({t1 / (n * corr):.2f}) |")
        print(f"\n{rate}: corrected model: compute a + b x windows, a = {a:.4f} s per step, b = {b:.4f} s per window; "
              f"the ring's wire time plus {h * 1e3:.1f} ms per hop (paper: {LATENCY_S * 1e6:.0f} us), plus "
              f"{wait * 1e3:.1f} ms per hop waiting for the slowest rank ({nbytes / 1e6:.2f} MB of gradient). "
              "Step-time errors against the medians, paper / corrected: "
              + ", ".join(f"N = {n}: {p:+.0%} / {q:+.0%}" for n, p, q in errors))
        for n in (n for n in alone if n > 1):
            on_quota = [r1.step_s / (n * t) for r1, t in zip(runs[first], alone[n])]
            print(f"{rate}: the bound one rank's compute sets at N = {n}, t(B) / (N t(B/N)) in the same round: "
                  f"{spread(on_quota, 2)} on {args.host_cpu} core")
        for n in (m for m in (8, 16) if args.batch_size % m == 0 and m > max(runs)):
            t = a + b * args.batch_size / n + 2 * (n - 1) / n * nbytes * 8 / (gbit * 1e9) + 2 * (n - 1) * (h + wait)
            print(f"{rate}: corrected projection at N = {n}: {t:.3f} s per step, efficiency {t1 / (n * t):.2f} "
                  f"(fixed global batch {args.batch_size}: {args.batch_size // n} window(s) per rank)")
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the issue's run: small, hyperrogue, window 2000, 2000 steps")
    ap.add_argument("--data", type=Path, help="dataset (default: the hyperrogue soundtrack, built once)")
    ap.add_argument("--synthetic", action="store_true", help="train on six synthetic melodies (built once)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--val-every", type=int, default=10)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--val-batches", type=int, default=2)
    ap.add_argument("--workers", default="1,2", help="comma-separated N; must include 1")
    ap.add_argument("--rules", default="linear", help="learning-rate rules for the growing batch")
    ap.add_argument("--elephas", default="synchronous,asynchronous", help="elephas modes ('' = none)")
    ap.add_argument("--elephas-steps-per-epoch", type=int, default=5)
    ap.add_argument("--project-presets", default="small,default,large")
    ap.add_argument("--project-window", type=int, default=2000, help="window of the projection's step times")
    ap.add_argument("--master", default="local[4]")
    ap.add_argument("--efficiency", default="",
                    help="with --skip weak: E_N of an earlier growing-batch table, e.g. 'allreduce:2=0.62,"
                         "elephas synchronous:2=0'")
    ap.add_argument("--skip", default="", help="comma-separated tables to skip: strong,weak,project")
    ap.add_argument("--hosts", default="", help="table 4 across emulated hosts (root): comma-separated N, e.g. 1,2,4")
    ap.add_argument("--rates", default="1gbit,10gbit", help="link rates of table 4 (tc's units)")
    ap.add_argument("--host-cpu", type=float, default=0.3, help="cores per emulated host (a CPU quota)")
    ap.add_argument("--head-cpu", type=float, default=0.4, help="cores of host 0 (S3, the master, the driver)")
    ap.add_argument("--cpu-period-ms", type=float, default=0.0,
                    help="the CPU quotas' accounting period (0: the finest the kernel allows for these quotas)")
    ap.add_argument("--sync-s", type=float, default=0.0,
                    help="the projection's synchronisation cost per step beyond the ring (table 4 measures it)")
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                    help="a train override for every allreduce run (e.g. allreduce.pack_kb=128)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="table 4: run every N this many times in turn on one cluster (medians, ranges)")
    ap.add_argument("--alone", action="store_true",
                    help="also time one rank alone on each N's share of the batch (compute without communication)")
    args = ap.parse_args()
    EXTRA_SETS.extend(args.sets)
    if args.full:
        args.preset, args.window, args.steps, args.val_every, args.log_every = "small", 2000, 2000, 100, 20
        args.val_batches = 50  # fixed random validation batches (the evaluate stage scores the whole split)
    args.workers = [int(n) for n in args.workers.split(",")]
    args.rules = [r for r in args.rules.split(",") if r]
    args.elephas = [m for m in args.elephas.split(",") if m]
    args.project_presets = [p for p in args.project_presets.split(",") if p]
    args.hosts = [int(n) for n in args.hosts.split(",") if n]
    args.rates = [r for r in args.rates.split(",") if r]
    skip = set(args.skip.split(","))
    if args.synthetic:
        args.data = synthetic_dataset()
    if args.data is None and (not {"strong", "weak"} <= skip or args.hosts):
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_train_budget import build_dataset

        args.data = build_dataset(dict(os.environ))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"# bench_scaling: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit.strip()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"\n{' '.join(sys.argv)}")
    efficiency: dict[str, dict[int, float]] = {}
    for item in filter(None, args.efficiency.split(",")):
        name, _, pair = item.rpartition(":")
        n, _, e = pair.partition("=")
        efficiency.setdefault(name, {})[int(n)] = float(e)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        if "strong" not in skip:
            strong(args, Path(tmp))
        if "weak" not in skip:
            efficiency = weak(args, Path(tmp))
    if args.hosts:
        hosts_table(args)
    if "project" not in skip:
        project(args, efficiency)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
