"""Training throughput against the machine's own matrix-multiply rate, and the engines compared.

For each preset (``small`` and ``default`` unless --presets) a fresh process
trains with the local engine (the real loop: prefetched windows,
``train_on_batch``, metrics) and reports predicted samples per second
(batch × window per step, over the steps after a warm-up), the useful
GFLOP/s they stand for (6 FLOPs per trainable parameter per predicted
sample: forward and backward) and the ratio of that to the float32 GEMM rate
numpy reaches in the same process with the same thread count (2048×2048
matmuls, best of several, measured before and after training). The
training-model step alone (``train_on_batch`` on one fixed batch, best of
several) is reported too.

``--models causal,valid`` also times the earlier training model (the padded
causal model with its first RF - 1 outputs cropped) in the same run, for a
before/after on the same machine state.

``--paired-step`` compares the optimizers' steps alone in one process per
preset and batch: one model per optimizer from the same weights, blocks of
steps alternating between them (``--rounds`` of each), on ``--threads``
TensorFlow threads (1: an allreduce rank's share of a small host). A paired
difference per round cancels the machine's drift, which moves single runs
minutes apart by up to a quarter. There ``eager-rate`` is Keras's ``Adam``
with the schedule computed outside the step and its rate assigned before each
step, as the training loop did before the schedule moved into the step's graph.

``--engines local,synchronous,asynchronous,hogwild`` compares the local
engine with elephas on Spark local[N] in each mode (one preset): throughput
and the peak RSS of the driver and of the largest executor-side Python
process, sampled from /proc. For elephas the throughput is that of the last
epoch (the first one also pays for starting the executors' TensorFlow).

``--precision float32,bfloat16`` times the training step (``train_on_batch``,
one fixed batch) in each precision in one process per preset, from the same
weights, beside TensorFlow's own 2048×2048 matmul rate in each precision, in
interleaved rounds (GEMM and step blocks alternating, the order reversed every
other round). Each ratio is the median of the per-round ratios, with their
range; wall time and the process's CPU time are both reported (on a shared
machine the CPU time is the steadier of the two).

Usage: python bench/bench_train.py [--presets small,default] [--window 2000] [--batch-size 4]
       [--models valid|causal,valid] [--optimizers keras]
       [--engines local,synchronous,asynchronous,hogwild]
       python bench/bench_train.py --precision float32,bfloat16 [--presets small,default] [--batch-size 8]
           [--rounds 6] [--block 2]
       python bench/bench_train.py --paired-step [--presets small] [--batches 2,8] [--threads 1] [--rounds 10]
           [--optimizers eager-rate,keras]
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
from dataclasses import replace
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


def sgemm_gflops(threads: int, n: int = 2048, repeats: int = 7) -> float:
    """numpy float32 ``n×n @ n×n`` on ``threads`` BLAS threads: best of ``repeats``, in GFLOP/s."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    best = float("inf")
    with threadpool_limits(limits=threads, user_api="blas"):
        a @ b
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def training_threads() -> int:
    """The intra-op thread count TensorFlow trains with (all cores unless configured)."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


def use_model(kind: str) -> None:
    """Make ``WaveNet.training_model`` build the ``valid`` (current) or ``causal`` (earlier) training model."""
    from waveforms.model import WaveNet
    from waveforms.model.wavenet import build_keras

    if kind == "causal":
        def causal(self):
            model = build_keras(self.config, crop=self.receptive_field - 1)
            model.set_weights(self.keras_model.get_weights())
            return model

        WaveNet.training_model = causal
    elif kind != "valid":
        raise SystemExit(f"unknown model {kind!r}: valid or causal")


def use_optimizer(kind: str) -> None:
    """The engines' optimizer is Keras's ``Adam`` (``keras``); a fused one was measured within noise at the
    default batch and removed (docs/benchmarks.md)."""
    if kind != "keras":
        raise SystemExit(f"unknown optimizer {kind!r}: keras")


EAGER_RATE = "eager-rate"  # Keras's Adam, its rate computed eagerly and set before each step (the loop until 2026-12-03)


def random_batch(rng, batch: int, receptive_field: int, window: int):
    """Random codes ``(batch, RF - 1 + window)`` and targets ``(batch, window)``, int32."""
    import numpy as np

    return (rng.integers(0, 256, (batch, receptive_field - 1 + window)).astype(np.int32),
            rng.integers(0, 256, (batch, window)).astype(np.int32))


def step_rate(preset: str, batch: int, window: int, repeats: int = 8) -> tuple[float, int]:
    """Predicted samples/s of ``train_on_batch`` alone (best of ``repeats``) and the trainable parameters."""
    import numpy as np

    from waveforms.config import TrainConfig
    from waveforms.model import build
    from waveforms.train.common import compile_model

    wavenet = build(preset)
    model = compile_model(wavenet.training_model(), TrainConfig(preset=preset))
    x, y = random_batch(np.random.default_rng(0), batch, wavenet.receptive_field, window)
    for _ in range(3):
        model.train_on_batch(x, y)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        best = min(best, time.perf_counter() - t)
    params = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    return batch * window / best, params


def paired_step(args) -> None:
    """Child process: ms per ``train_on_batch`` step of each optimizer, alternating blocks; prints JSON."""
    from waveforms.train.collective import set_threads

    set_threads(args.threads)  # before TensorFlow starts
    import numpy as np

    from waveforms.config import TrainConfig
    from waveforms.model import build
    from waveforms.train.common import compile_model
    from waveforms.train.schedules import learning_rate, lr_at

    kinds = args.optimizers.split(",")
    cfg = TrainConfig(preset=args.preset)  # its cosine schedule with warmup
    wavenet = build(args.preset)
    start = wavenet.training_model().get_weights()
    models, done = {}, {kind: 0 for kind in kinds}
    for kind in kinds:
        use_optimizer("keras" if kind == EAGER_RATE else kind)
        # eager-rate: a constant rate, the variable the loop set before each step from the schedule
        own = replace(cfg, lr_schedule="constant", warmup_steps=0) if kind == EAGER_RATE else cfg
        models[kind] = compile_model(wavenet.training_model(), own, shift=True)
        models[kind].set_weights(start)
    use_optimizer("keras")
    schedule = learning_rate(cfg)
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, args.batch_size, wavenet.receptive_field, args.window) for _ in range(4)]

    def block(kind: str, n: int) -> float:
        model, eager = models[kind], kind == EAGER_RATE
        t = time.perf_counter()
        for i in range(n):
            if eager:
                model.optimizer.learning_rate = lr_at(schedule, done[kind])
            model.train_on_batch(*batches[i % len(batches)])
            done[kind] += 1
        return (time.perf_counter() - t) / n * 1000

    for kind in kinds:
        block(kind, 3)
    ms: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            ms[kind].append(block(kind, args.block))
    print(json.dumps({"ms": ms}))


def paired_table(args) -> None:
    import numpy as np

    kinds = args.optimizers.split(",")
    print(f"steps alone (train_on_batch), {args.rounds} rounds of {args.block} steps per optimizer, alternating in one "
          f"process; window {args.window}, {args.threads} TensorFlow thread(s); {os.cpu_count()} cores")
    print()
    ref = kinds[0]
    print(f"| preset | windows | {' | '.join(f'{k}: ms per step' for k in kinds)} | "
          f"{' | '.join(f'{ref} - {k}: ms (rounds {k} faster)' for k in kinds[1:])} | {kinds[-1]} / {ref} |")
    print("|---|---|" + "---|" * (2 * len(kinds)))
    for preset in args.presets.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            result, _ = measure([sys.executable, __file__, "--one=paired", f"--preset={preset}",
                                 f"--batch-size={batch}", f"--window={args.window}", f"--threads={args.threads}",
                                 f"--rounds={args.rounds}", f"--block={args.block}", f"--optimizers={args.optimizers}"])
            ms = result["ms"]
            cells = [f"{np.median(ms[k]):.1f}" for k in kinds]
            for k in kinds[1:]:
                diff = [a - b for a, b in zip(ms[ref], ms[k])]
                cells.append(f"{np.median(diff):+.1f} ({sum(d > 0 for d in diff)}/{len(diff)})")
            ratio = np.median([b / a for a, b in zip(ms[ref], ms[kinds[-1]])])
            print(f"| {preset} | {batch} | {' | '.join(cells)} | {ratio:.3f} |")


def gemm_block(dtype: str, n: int = 2048, repeats: int = 3) -> tuple[float, float]:
    """TensorFlow ``n×n @ n×n`` in ``dtype``: (GFLOP/s by wall time, by process CPU time), over ``repeats``."""
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_uniform((n, n), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_uniform((n, n), seed=(3, 4)), dtype)
    tf.matmul(a, b).numpy()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        tf.matmul(a, b).numpy()
    flops = 2 * n**3 * repeats / 1e9
    return flops / (time.perf_counter() - t), flops / max(time.process_time() - c, 1e-9)


def precision_step(args) -> None:
    """Child process: per round, a GEMM block and a step block in each precision, interleaved; prints JSON."""
    import numpy as np

    from waveforms.config import TrainConfig
    from waveforms.model import build
    from waveforms.train.common import compile_model

    kinds = args.precision.split(",")
    wavenet = build(args.preset)
    start = wavenet.training_model().get_weights()
    x, y = random_batch(np.random.default_rng(0), args.batch_size, wavenet.receptive_field, args.window)
    models = {}
    for kind in kinds:
        models[kind] = compile_model(wavenet.training_model(), TrainConfig(preset=args.preset, precision=kind))
        models[kind].set_weights(start)
        for _ in range(2):
            models[kind].train_on_batch(x, y)
    dtype = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
    out = {k: {"step_ms": [], "step_cpu_ms": [], "gemm": [], "gemm_cpu": []} for k in kinds}
    for r in range(args.rounds):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            wall, cpu = gemm_block(dtype[kind])
            out[kind]["gemm"].append(wall)
            out[kind]["gemm_cpu"].append(cpu)
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.block):
                models[kind].train_on_batch(x, y)
            out[kind]["step_ms"].append((time.perf_counter() - t) / args.block * 1000)
            out[kind]["step_cpu_ms"].append((time.process_time() - c) / args.block * 1000)
    print(json.dumps(out))


def _ratio(a: list[float], b: list[float]) -> str:
    """Median of the per-round ratios a/b, with their range."""
    import numpy as np

    r = [x / y for x, y in zip(a, b)]
    return f"{np.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"


def precision_table(args) -> None:
    import numpy as np

    kinds = args.precision.split(",")
    ref, other = kinds[0], kinds[-1]
    print(f"training step (train_on_batch) and TensorFlow's 2048² matmul in {' and '.join(kinds)}, {args.rounds} "
          f"interleaved rounds of {args.block} steps; batch {args.batch_size} × window {args.window}; "
          f"{os.cpu_count()} cores; ratio = {ref} time / {other} time per round: median (range)")
    print()
    print(f"| preset | {ref} ms/step | {other} ms/step | step speed-up, wall | step speed-up, CPU | "
          f"GEMM {ref} GFLOP/s | GEMM {other} GFLOP/s | GEMM speed-up, wall | GEMM speed-up, CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        r, _ = measure([sys.executable, __file__, "--one=precision", f"--preset={preset}",
                        f"--precision={args.precision}", f"--batch-size={args.batch_size}", f"--window={args.window}",
                        f"--rounds={args.rounds}", f"--block={args.block}"])
        a, b = r[ref], r[other]
        print(f"| {preset} | {np.median(a['step_ms']):.0f} | {np.median(b['step_ms']):.0f} | "
              f"{_ratio(a['step_ms'], b['step_ms'])} | {_ratio(a['step_cpu_ms'], b['step_cpu_ms'])} | "
              f"{np.median(a['gemm']):.0f} | {np.median(b['gemm']):.0f} | {_ratio(b['gemm'], a['gemm'])} | "
              f"{_ratio(b['gemm_cpu'], a['gemm_cpu'])} |")


def one(args) -> None:
    """Child process: train once and print a JSON result."""
    from helpers.train import tone_dataset
    from waveforms.config import ElephasConfig, TrainConfig
    from waveforms.train import run

    use_model(args.model)
    use_optimizer(args.optimizer)
    threads = training_threads()
    gemm = [sgemm_gflops(threads)]

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = tone_dataset(tmp / "ds", n_tracks=4, seconds=20.0, sample_rate=16000)
    common = dict(data=str(data), model_dir=str(tmp / "model"), preset=args.preset, batch_size=args.batch_size,
                  window=args.window, seed=0)
    if args.one == "local":
        # one metrics row after the warm-up and one at the end: logging every step would time the logging too
        steps = args.warmup + args.steps
        run(TrainConfig(**common, steps=steps, log_every=args.warmup, val_every=10**9, checkpoint_every=10**9))
        rows = [json.loads(line) for line in (tmp / "model" / "metrics.jsonl").read_text().splitlines()]
        timed = [(b["step"] - a["step"], b["samples_per_s"]) for a, b in zip(rows, rows[1:])]
        seconds = sum(n * args.batch_size * args.window / r for n, r in timed)
        rate = sum(n for n, _ in timed) * args.batch_size * args.window / seconds
    else:
        elephas = ElephasConfig(mode=args.one, master=f"local[{args.workers}]", workers=args.workers, epochs=2,
                                windows_per_worker=args.windows_per_worker)
        run(TrainConfig(**common, engine="elephas", elephas=elephas, val_batches=1))
        rows = [json.loads(line) for line in (tmp / "model" / "metrics.jsonl").read_text().splitlines()]
        rate = rows[-1]["samples_per_s"]
    result = {"samples_per_s": rate}
    if args.one == "local":
        gemm.append(sgemm_gflops(threads))
        result["step_samples_per_s"], result["params"] = step_rate(args.preset, args.batch_size, args.window)
        gemm.append(sgemm_gflops(threads))
        result.update(sgemm_gflops=max(gemm), threads=threads)
    print(json.dumps(result))


def engines_table(args, passthrough: list[str]) -> None:
    results = []
    for engine in args.engines.split(","):
        result, peaks = measure([sys.executable, __file__, f"--one={engine}", f"--preset={args.preset}",
                                 *passthrough])
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


def throughput_table(args, passthrough: list[str]) -> None:
    rows = []
    for preset in args.presets.split(","):
        for model in args.models.split(","):
            for optimizer in args.optimizers.split(","):
                result, _ = measure([sys.executable, __file__, "--one=local", f"--preset={preset}",
                                     f"--model={model}", f"--optimizer={optimizer}", *passthrough])
                rows.append((preset, model, optimizer, result))
    threads = rows[0][-1]["threads"] if rows else 0
    print(f"window {args.window}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}; "
          f"{os.cpu_count()} cores, {threads} training and BLAS threads; useful FLOPs = 6 × parameters × samples")
    print()
    print("| preset | training model | optimizer | parameters | predicted samples/s | useful GFLOP/s | "
          "sgemm GFLOP/s | ratio to sgemm | step alone: samples/s | step alone: ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset, model, optimizer, r in rows:
        useful = 6 * r["params"] * r["samples_per_s"] / 1e9
        step_useful = 6 * r["params"] * r["step_samples_per_s"] / 1e9
        print(f"| {preset} | {model} | {optimizer} | {r['params']:,} | {r['samples_per_s']:,.0f} | {useful:.1f} | "
              f"{r['sgemm_gflops']:.0f} | {useful / r['sgemm_gflops']:.2f} | {r['step_samples_per_s']:,.0f} | "
              f"{step_useful / r['sgemm_gflops']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="small,default", help="presets for the throughput table")
    ap.add_argument("--models", default="valid", help="training models: valid (current), causal (earlier)")
    ap.add_argument("--preset", default="default", help="the preset of the engine comparison (--engines)")
    ap.add_argument("--model", default="valid", help=argparse.SUPPRESS)
    ap.add_argument("--optimizers", default="keras", help="Adam: keras (the engines'); paired also eager-rate")
    ap.add_argument("--optimizer", default="keras", help=argparse.SUPPRESS)
    ap.add_argument("--window", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30, help="timed local steps (a multiple of --warmup)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--windows-per-worker", type=int, default=16)
    ap.add_argument("--engines", default="", help="compare engines, e.g. local,synchronous,asynchronous,hogwild")
    ap.add_argument("--paired-step", action="store_true", help="the optimizers' steps alone, paired in one process")
    ap.add_argument("--batches", default="2,8", help="windows per step of the paired comparison")
    ap.add_argument("--threads", type=int, default=1, help="TensorFlow threads of the paired comparison")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of the paired comparison")
    ap.add_argument("--block", type=int, default=10, help="steps per optimizer per round (paired comparison)")
    ap.add_argument("--precision", default="", help="compare the step in these precisions, e.g. float32,bfloat16")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one == "paired":
        paired_step(args)
        return
    if args.one == "precision":
        precision_step(args)
        return
    if args.one:
        one(args)
        return
    if args.precision:
        if args.rounds == 10 and args.block == 10:  # the paired comparison's defaults: too long for a step of seconds
            args.rounds, args.block = 6, 2
        precision_table(args)
        return
    if args.paired_step:
        if args.optimizers == "keras":
            args.optimizers = "eager-rate,keras"
        paired_table(args)
        return
    passthrough = [f"--window={args.window}", f"--batch-size={args.batch_size}", f"--steps={args.steps}",
                   f"--warmup={args.warmup}", f"--workers={args.workers}",
                   f"--windows-per-worker={args.windows_per_worker}"]
    if args.engines:
        engines_table(args, passthrough)
    else:
        throughput_table(args, passthrough)


if __name__ == "__main__":
    main()
