"""Is the allreduce engine step-equal to one process? One step at fixed weights, and curves beside the noise floor.

Table 1, one step at fixed weights: from the same state (the initial weights, and the local engine's
checkpoint at step --late of its curve below), one step of the local engine (Keras ``train_on_batch``)
against one step of the collective step with 2 ranks: two processes joined by TensorFlow's collective
all-reduce through ``TF_CONFIG`` on 127.0.0.1, each running the training loop as an engine's rank does
(without Spark, which only starts them), on its half of the same global batch. Each cell is
‖a − b‖ / ‖b‖ over all arrays: the gradient of the global batch (before clipping), the update (weights
after the step − before), the optimizer's moments, the moving average after the step; and the learning
rate applied, the loss and the validation loss (on the moving average) as relative differences.

Table 2, curves: --steps steps of --preset, global batch --batch-size, the same seed and data, each run from
scratch:

- local: the local engine;
- halves: the local engine, each step's gradient the sum of two half-batch gradients divided by 2 (the
  float-order change an all-reduce of 2 ranks makes, without a collective);
- reversed: the local engine, each batch's windows in reverse order;
- allreduce: the engine, 2 ranks on Spark local[2] (``--engine allreduce``, the CLI).

Per validation step: each run's training loss (the mean over the logged interval) and validation loss;
then each run's largest gap to the local engine's curve (and the allreduce engine's to halves'), and the
relative difference of its final saved weights (the moving average).

Data: the hyperrogue soundtrack as bench/bench_train_budget.py builds it (bench/out/hyperrogue-dataset),
or --data.

Usage: python bench/bench_step_equal.py [--preset small] [--steps 400] [--batch-size 8] [--late 300]
       [--val-every 100] [--val-batches 32] [--data DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
VARIANTS = ("local", "halves", "reversed", "allreduce")
GROUPS = ("grad", "update", "moments", "average")


def child_env() -> dict[str, str]:
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
            "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}


def train_config(args, model_dir: str):
    from waveforms.config import TrainConfig

    return TrainConfig(data=str(Path(args.data).resolve()), model_dir=model_dir, preset=args.preset,
                       steps=args.steps, batch_size=args.batch_size, seed=args.seed, val_every=args.val_every,
                       checkpoint_every=args.val_every, val_batches=args.val_batches, log_every=args.log_every,
                       preview_every=-1)


# --- in a child process ---------------------------------------------------------------------------------------


class HalvesStep:
    """The local engine's step with the gradient summed from the batch's two halves, then divided by 2: the
    collective step's arithmetic (:class:`waveforms.train.collective.CollectiveStep`) in one process."""

    def __init__(self, model, ema=None):
        import keras
        import tensorflow as tf

        from waveforms.train.ema import NO_UPDATE

        self.ema, self._no_update = ema, tf.constant(NO_UPDATE, tf.float32)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        opt = model.optimizer

        @tf.function(jit_compile=False, reduce_retracing=True)
        def step(x, y, ema_decay):
            variables, half = model.trainable_variables, tf.shape(y)[0] // 2
            grads, losses = [], []
            for part in (slice(None, half), slice(half, None)):
                with tf.GradientTape() as tape:
                    loss = loss_fn(y[part], model(x[part], training=True))
                grads.append([tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)])
                losses.append(loss)
            if ema is not None:
                with tf.control_dependencies(grads[0] + grads[1]):
                    ema.assign(ema_decay)
            opt.apply_gradients(zip([(a + b) / 2.0 for a, b in zip(*grads)], variables))
            return (losses[0] + losses[1]) / 2.0

        self._step = step
        self.grad_bytes = 0

    def __call__(self, x, y) -> float:
        import tensorflow as tf

        decay = tf.constant(self.ema.take_deferred(), tf.float32) if self.ema else self._no_update
        return float(self._step(x, y, decay))

    def time_all_reduce(self) -> float:
        return 0.0


def child_curve(variant: str, cfg_path: str, model_dir: str, keep_at: int, keep_dir: str) -> None:
    """Train one curve variant of the local engine into ``model_dir``; keep a copy of the checkpoint of step
    ``keep_at`` in ``keep_dir`` (if given)."""
    from dataclasses import replace

    from waveforms import config as cfgmod
    from waveforms.model import checkpoint
    from waveforms.storage import OutputDir
    from waveforms.train import loop

    cfg = replace(cfgmod.from_json(Path(cfg_path).read_text(), cfg_path), model_dir=model_dir)
    with OutputDir(cfg.model_dir) as out:
        trainer = loop.Trainer(cfg, out, loop.Collective(), "local", loop.mean_loss)
        if variant == "halves":
            trainer.collective_step = HalvesStep(trainer.model, trainer.ema)
        elif variant == "reversed":
            plain = trainer.batch

            def reversed_batch(step: int):
                x, y = plain(step)
                return x[::-1].copy(), y[::-1].copy()

            trainer.batch = reversed_batch
        save = trainer.save_checkpoint

        def save_and_keep() -> None:
            save()
            if keep_dir and trainer.state.step == keep_at:
                shutil.copytree(checkpoint.root(out), Path(keep_dir) / checkpoint.DIR)

        trainer.save_checkpoint = save_and_keep
        trainer.run()


def child_step(cfg_path: str, model_dir: str, out_path: str) -> None:
    """One step of the loop from the checkpoint in ``model_dir`` (or fresh), as the local engine (no
    ``TF_CONFIG``) or as one rank of the collective step; rank 0 (or the local engine) writes ``out_path``."""
    from dataclasses import replace

    from waveforms.train import collective

    collective.set_threads(int(os.environ.get("WAVEFORMS_THREADS", "1")))
    team = collective.from_env()  # before TensorFlow's first op
    import keras
    import tensorflow as tf

    from waveforms import config as cfgmod
    from waveforms.storage import OutputDir
    from waveforms.train import loop

    cfg = replace(cfgmod.from_json(Path(cfg_path).read_text(), cfg_path), model_dir=model_dir)
    out = OutputDir(model_dir) if team.lead else None
    trainer = loop.Trainer(cfg, out, team, "local" if team.count == 1 else "allreduce", loop.mean_loss)
    model, loss_fn = trainer.model, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = trainer.batch(trainer.state.step)

    @tf.function
    def gradient(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    grad = [tf.convert_to_tensor(g) for g in gradient(x, y)]
    grad = [np.asarray(g) / team.count for g in team.all_reduce(grad)]
    before = model.get_weights()
    trainer.step(x, y)
    if team.lead:
        average = trainer.ema.weights()
        trainer.eval_model.set_weights(average)
        arrays = {"grad": grad, "update": [a - b for a, b in zip(model.get_weights(), before)],
                  "moments": [np.asarray(v.numpy()) for v in model.optimizer.variables[1:]], "average": average}
        meta = {"lr": trainer.last_rate(), "loss": trainer.interval[-1],
                "val_loss": trainer.evaluate(trainer.eval_model, trainer.val_batches),
                "iterations": int(model.optimizer.iterations.numpy()), "ema_updates": trainer.ema.updates}
        np.savez(out_path, meta=json.dumps(meta),
                 **{f"{k}/{i:04d}": a for k, group in arrays.items() for i, a in enumerate(group)})
    sys.stdout.flush()
    os._exit(0)  # without TensorFlow's teardown, which may wait on the collective of a peer that has gone


# --- the driver -------------------------------------------------------------------------------------------------


def run_child(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *argv], env=env or child_env(), cwd=ROOT)


def wait_all(procs: list[subprocess.Popen], what: str) -> None:
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{what} failed: exit status {codes}")


def curve(variant: str, args, work: Path, cfg_path: Path, keep: Path) -> Path:
    model_dir = work / variant
    if variant != "allreduce":
        keep_dir = str(keep) if variant == "local" else ""
        wait_all([run_child(["--child-curve", variant, str(cfg_path), str(model_dir), str(args.late),
                                  keep_dir])], variant)
        return model_dir
    sets = {"val_every": args.val_every, "checkpoint_every": args.val_every, "val_batches": args.val_batches,
            "log_every": args.log_every, "preview_every": -1}
    cmd = [sys.executable, "-m", "waveforms", "train", "--data", str(Path(args.data).resolve()), "--model-dir",
           str(model_dir), "--preset", args.preset, "--steps", str(args.steps), "--batch-size",
           str(args.batch_size), "--seed", str(args.seed), "--engine", "allreduce", "--master", "local[2]",
           "--workers", "2"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    subprocess.run(cmd, env=child_env(), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return model_dir


def one_step(cfg_path: Path, start: Path | None, work: Path, name: str) -> dict[str, tuple[dict, dict]]:
    """The local engine's step and the 2-rank collective step from ``start`` (None: fresh)."""
    from waveforms.runtime.ports import free_port
    from waveforms.train.collective import tf_config

    found = {}
    for how in ("local", "ranks"):
        model_dir, out = work / f"{name}-{how}", work / f"{name}-{how}.npz"
        shutil.copytree(start, model_dir) if start else model_dir.mkdir()
        argv = ["--child-step", str(cfg_path), str(model_dir), str(out)]
        if how == "local":
            procs = [run_child(argv)]
        else:
            peers = [f"127.0.0.1:{free_port('127.0.0.1')}" for _ in range(2)]
            procs = [run_child(argv, {**child_env(), "TF_CONFIG": tf_config(peers, r)}) for r in range(2)]
        wait_all(procs, f"one step ({name}, {how})")
        with np.load(out) as z:
            groups: dict[str, list[np.ndarray]] = {}
            for key in sorted(k for k in z.files if k != "meta"):
                groups.setdefault(key.split("/")[0], []).append(z[key].astype(np.float64))
            found[how] = (json.loads(str(z["meta"])), groups)
    return found


def rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """‖a − b‖ / ‖b‖ over all arrays."""
    num = sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b))
    return float(np.sqrt(num / sum(float((y ** 2).sum()) for y in b)))


def rows(model_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (model_dir / "metrics.jsonl").read_text().splitlines())}


def final_weights(model_dir: Path) -> list[np.ndarray]:
    import keras

    from waveforms.model import load

    keras.backend.clear_session()
    return [w.astype(np.float64) for w in load(str(model_dir)).keras_model.get_weights()]


def report(args, steps: dict[str, dict], dirs: dict[str, Path]) -> None:
    print(f"\nOne step at fixed weights ({args.preset}, global batch {args.batch_size}; 2 ranks against the "
          "local engine; ‖a − b‖ / ‖b‖):\n")
    print("| from | gradient | update | moments | average | lr | loss | val_loss | iterations, ema updates |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, found in steps.items():
        (lm, lg), (rm, rg) = found["local"], found["ranks"]
        cells = [f"{rel(rg[g], lg[g]):.1e}" for g in GROUPS]
        cells += [f"{abs(rm[k] - lm[k]) / abs(lm[k]):.1e}" for k in ("lr", "loss", "val_loss")]
        same = "same" if (rm["iterations"], rm["ema_updates"]) == (lm["iterations"], lm["ema_updates"]) else \
            f"{rm['iterations']}, {rm['ema_updates']} vs {lm['iterations']}, {lm['ema_updates']}"
        print(f"| {name} | " + " | ".join(cells) + f" | {same} |")
    curves = {v: rows(d) for v, d in dirs.items()}
    val_steps = [s for s in sorted(curves["local"]) if "val_loss" in curves["local"][s]]
    print(f"\nCurves ({args.steps} steps of {args.preset}, global batch {args.batch_size}, seed {args.seed}; "
          "loss / val_loss):\n")
    print("| step | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---|" * len(VARIANTS))
    for s in val_steps:
        print(f"| {s} | " + " | ".join(f"{curves[v][s]['loss']:.4f} / {curves[v][s]['val_loss']:.4f}"
                                       for v in VARIANTS) + " |")
    final = {v: final_weights(d) for v, d in dirs.items()}
    print("\n| run | against | largest loss gap | largest val_loss gap | final weights ‖a − b‖ / ‖b‖ |")
    print("|---|---|---|---|---|")
    for v, ref in [(v, "local") for v in VARIANTS[1:]] + [("allreduce", "halves")]:
        gap = max(abs(curves[v][s]["loss"] - curves[ref][s]["loss"]) for s in curves[ref])
        vgap = max(abs(curves[v][s]["val_loss"] - curves[ref][s]["val_loss"]) for s in val_steps)
        print(f"| {v} | {ref} | {gap:.2e} | {vgap:.2e} | {rel(final[v], final[ref]):.2e} |")


def main() -> None:
    if sys.argv[1:2] == ["--child-curve"]:
        return child_curve(*sys.argv[2:5], int(sys.argv[5]), sys.argv[6])
    if sys.argv[1:2] == ["--child-step"]:
        return child_step(*sys.argv[2:5])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--late", type=int, default=300, help="the local curve's checkpoint for the late one-step check "
                                                         "(a multiple of --val-every)")
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--val-batches", type=int, default=32)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--data", default="")
    args = ap.parse_args()
    from waveforms import config as cfgmod

    if not args.data:
        from bench_train_budget import build_dataset

        args.data = str(build_dataset(child_env()))
    work = Path(tempfile.mkdtemp(prefix="bench-step-equal-"))
    try:
        cfg_path = work / "config.json"
        cfg_path.write_text(cfgmod.to_json(train_config(args, str(work / "unused")), "train"))
        keep = work / f"local-{args.late}"
        dirs = {v: curve(v, args, work, cfg_path, keep) for v in VARIANTS}
        steps = {"step 0": one_step(cfg_path, None, work, "fresh"),
                 f"step {args.late}": one_step(cfg_path, keep, work, "late")}
        print(f"machine: {os.cpu_count()} CPUs, shared; data {args.data}")
        report(args, steps, dirs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
