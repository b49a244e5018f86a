"""The training loop, for one process (the local engine) or one rank of N (the allreduce engine).

Every rank runs this loop on its share of each step's batch; the step itself
is Keras's ``train_on_batch`` in one process, or a collective step
(:class:`waveforms.train.collective.CollectiveStep`) whose all-reduced
gradient makes it one optimizer step on the whole batch. Rank 0 alone writes:
checkpoints, ``metrics.jsonl``, validation, previews, the moving average and the
artifact; its decisions (stop for the budget or early stopping, the fitted
schedule) reach the other ranks after every step.

Resumable: every ``checkpoint_every`` steps (and at the end) the weights,
optimizer state, step and early-stopping state are checkpointed; batches are a
pure function of ``(seed, step)``, so a resumed run sees the same data as an
uninterrupted one, whatever the number of ranks.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from waveforms import progress
from waveforms.config import TrainConfig
from waveforms.dataset.cache import open_cache
from waveforms.errors import UserError
from waveforms.model import WaveNetConfig
from waveforms.storage import OutputDir
from waveforms.train import checkpoint, previews, recipe, status
from waveforms.train.collective import Collective, CollectiveStep, sync_model
from waveforms.train.common import Setup, check_finite, compile_model, mean_loss, prepare, save_artifact, scalar
from waveforms.train.ema import EMA
from waveforms.train.metrics import METRICS, TENSORBOARD, MetricsLog
from waveforms.train.windows import Prefetcher, WindowSampler, shared_reader
from waveforms.units import bits

log = logging.getLogger(__name__)

ENGINES = ("local", "allreduce")  # engines that run this loop; their checkpoints resume each other


def seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _same_model(saved: dict[str, Any] | None, cfg: WaveNetConfig) -> bool:
    """True if a checkpoint's stored model config (any saved form) describes ``cfg``."""
    try:
        return saved is not None and WaveNetConfig.from_dict(saved) == cfg
    except UserError:
        return False


def fresh_state() -> dict[str, Any]:
    return {"step": 0, "wall_time": 0.0, "best_val": None, "bad_checks": 0, "stopped_early": False}


def start_state(setup: Setup, model, out: OutputDir) -> dict[str, Any]:
    """Resume from the newest checkpoint (fetched from S3 if need be) unless ``--fresh``; the state to continue from."""
    cfg, model_dir = setup.cfg, out.uri
    if cfg.fresh:
        checkpoint.clear(out)
        out.remove(METRICS, TENSORBOARD, previews.DIR)
    state = checkpoint.pull(out)
    if state is None:
        out.remove(METRICS)  # rows of a run that never checkpointed
        return fresh_state()
    if not _same_model(state.get("model_config"), setup.wavenet.config) or state.get("engine") not in ENGINES:
        raise checkpoint.CheckpointError(
            f"the checkpoint in {model_dir} was made for another model or engine; rerun with --fresh"
        )
    if state.get("seed") != cfg.seed or state.get("batch_size") != cfg.batch_size or state.get("window") != cfg.window:
        log.warning("seed, batch size or window differ from the checkpoint's; resuming anyway")
    checkpoint.restore(out, model)
    out.download(METRICS)  # truncated to the checkpoint's step by the caller
    log.info("resuming from step %d (%s)", state["step"], checkpoint.latest_name(out))
    return {**fresh_state(), **state}


def start_ema(cfg: TrainConfig, model, out: OutputDir, step: int) -> EMA | None:
    """The moving average of the weights (None when ``ema_decay`` is 0), restored from the checkpoint."""
    if cfg.ema_decay <= 0:
        return None
    ema = EMA(model, cfg.ema_decay)
    if step > 0:
        arrays = checkpoint.load_ema(out)
        if arrays is None:
            log.warning("the checkpoint has no moving average of the weights: it starts from the current weights")
        else:
            ema.set_weights(arrays, int((checkpoint.load_state(out) or {}).get("ema_updates", step)))
    return ema


def for_workers(cfg: TrainConfig, workers: int) -> TrainConfig:
    """``cfg`` with the global batch and learning rate of ``workers`` ranks (:mod:`waveforms.train.recipe`)."""
    batch = recipe.global_batch(cfg, workers)
    return replace(cfg, batch_size=batch, learning_rate=recipe.scaled_learning_rate(cfg, batch))


def _sync_state(team: Collective, state: dict[str, Any]) -> None:
    """Rank 0's step, fitted schedule length and stop flag on every rank (at the start)."""
    step, fitted, stopped = team.agree([state["step"], state.get("schedule_steps") or 0, state["stopped_early"]])
    state["step"], state["stopped_early"] = int(step), bool(stopped)
    if fitted:
        state["schedule_steps"] = int(fitted)


def run(cfg: TrainConfig, out: OutputDir | None, team: Collective | None = None, engine: str = "local",
        evaluate: Callable[[Any, list], float] = mean_loss) -> dict[str, Any]:
    """Train (or resume) as rank ``team.rank``; rank 0 writes the artifact to ``out`` and returns the summary.

    ``evaluate(model, batches)`` is the validation loss; other ranks return ``{"rank": r, "steps": n}``.
    """
    team = team or Collective()
    n = team.count
    given_batch = cfg.batch_size
    cfg = for_workers(cfg, n)
    per_rank = cfg.batch_size // n
    seed_everything(cfg.seed)
    setup = prepare(cfg)
    if not cfg.init_from:  # a resumed run's checkpoint replaces these weights
        setup.notes.update(recipe.initialise(setup, cfg.init))
    model = compile_model(setup.wavenet.training_model(), cfg, driven=True)
    state = start_state(setup, model, out) if team.lead else fresh_state()
    if n > 1:
        sync_model(team, model)
        _sync_state(team, state)
    lead = team.lead
    metrics = MetricsLog(out) if lead else None
    if metrics:
        metrics.truncate(state["step"])
    ema = start_ema(cfg, model, out, state["step"]) if lead else None
    # validation and previews read the moving average through their own copy of the model
    eval_model = compile_model(setup.wavenet.training_model(), cfg) if ema else model
    preview = previews.Previewer(setup.wavenet, out, metrics, cfg.preview_seconds, cfg.seed,
                                 genre=0 if setup.genres else None) if lead else None
    schedule = recipe.learning_rate(cfg, state.get("schedule_steps"))
    if engine == "local" and n == 1:
        def train_step(x, y) -> float:
            return scalar(model.train_on_batch(x, y))
        collective = None
    else:
        collective = train_step = CollectiveStep(model, team)

    def final_weights() -> list[np.ndarray]:
        return ema.weights() if ema else model.get_weights()
    reader, cache = shared_reader(cfg.reads_in_flight), open_cache(setup.ds, cfg.shard_cache_dir, cfg.shard_cache_gb)
    sampler = WindowSampler(setup.ds, setup.train_regions, setup.receptive_field, cfg.window, cfg.batch_size,
                            cfg.seed, with_genre=bool(setup.genres), reader=reader, cache=cache)
    val_batches: list | None = None
    if setup.val_regions and lead:
        val_sampler = WindowSampler(setup.ds, setup.val_regions, setup.receptive_field, cfg.window,
                                    cfg.batch_size, cfg.seed, with_genre=bool(setup.genres), reader=reader,
                                    cache=cache)
        val_batches = val_sampler.fixed_batches(cfg.val_batches)

    def save_checkpoint() -> None:
        checkpoint.save(out, model, {
            **state, "engine": engine, "seed": cfg.seed, "batch_size": cfg.batch_size, "window": cfg.window,
            "model_config": setup.wavenet.config.to_dict(), "ema_updates": ema.updates if ema else 0,
        }, ema=ema.weights() if ema else None)

    def batch(step: int):
        if n == 1:
            return sampler.batch(step)
        return sampler.batch(step, part=slice(team.rank * per_rank, (team.rank + 1) * per_rank))

    step, last_loss = state["step"], state.get("loss")
    first_step = step
    interval: list[float] = []
    t0 = t_interval = time.perf_counter()
    wall0 = state["wall_time"]
    out_of_time = False
    since: tuple[int, float] | None = None  # (step, wall) once this process's train step is traced

    def wall() -> float:
        return wall0 + (time.perf_counter() - t0)

    pace: float | None = None  # seconds per step over the last logged interval
    last_fields: list[str] = []

    def total() -> int | None:
        return status.total_steps(cfg.steps, cfg.max_minutes, state.get("schedule_steps"))

    def left() -> str:
        return status.time_left(step, total(), wall(), cfg.max_minutes, pace)

    bar = progress.Progress("train", total(), "steps", eta=False, plain=False) if lead else None

    def row_due(step: int) -> bool:
        """Whether ``step`` writes a metrics row whatever the clock says: the same answer on every rank."""
        return (step % cfg.log_every == 0 or step % cfg.val_every == 0 or step % cfg.checkpoint_every == 0
                or step == cfg.steps or previews.due(step, cfg.preview_every, cfg.val_every, step == cfg.steps))

    try:
        with Prefetcher(batch, step, sampler.prefetch_depth()) as batches:
            while step < cfg.steps and not state["stopped_early"] and not out_of_time:
                x, y = next(batches)
                model.optimizer.learning_rate = recipe.lr_at(schedule, step)
                loss = train_step(x, y)
                step += 1
                if ema:
                    ema.update()
                check_finite(loss, step)
                interval.append(loss)
                state["step"] = step
                # Ranks agree on rank 0's decisions at row steps only (one collective fewer per step), so with
                # several ranks the budget is checked there and may run over by up to log_every steps.
                decide = n == 1 or row_due(step)
                if lead:
                    if since is None and step >= first_step + 10:
                        since = (step, wall())
                    if since and "schedule_steps" not in state and decide:
                        fitted = recipe.budget_steps(cfg, step, wall(), since)
                        if fitted:
                            state["schedule_steps"], schedule = fitted, recipe.learning_rate(cfg, fitted)
                            log.info("learning-rate schedule fitted to the %.1f-minute budget: %d steps",
                                     cfg.max_minutes, fitted)
                    out_of_time = (decide and step < cfg.steps and cfg.max_minutes > 0
                                   and wall() >= cfg.max_minutes * 60)
                    if out_of_time:
                        log.info("stopping at step %d: the %.1f-minute budget is spent", step, cfg.max_minutes)
                    done = step == cfg.steps or out_of_time
                    preview_due = previews.due(step, cfg.preview_every, cfg.val_every, done)
                    if row_due(step) or done:
                        row: dict[str, Any] = {"step": step, "lr": recipe.lr_at(schedule, step - 1)}
                        now = time.perf_counter()
                        if interval:
                            row["loss"] = last_loss = float(np.mean(interval))
                            row["samples_per_s"] = len(interval) * cfg.batch_size * cfg.window / (now - t_interval)
                        if ema and ((val_batches and (step % cfg.val_every == 0 or done)) or preview_due):
                            eval_model.set_weights(ema.weights())
                        if val_batches and (step % cfg.val_every == 0 or done):
                            val = evaluate(eval_model, val_batches)
                            row.update(val_loss=val, val_bits_per_sample=bits(val))
                            if state["best_val"] is None or val < state["best_val"]:
                                state["best_val"], state["bad_checks"] = val, 0
                            else:
                                state["bad_checks"] += 1
                                if 0 < cfg.early_stopping_patience <= state["bad_checks"]:
                                    state["stopped_early"] = True
                                    log.info("early stopping at step %d: no validation improvement in %d checks",
                                             step, state["bad_checks"])
                        if preview_due:
                            row.update(preview(step, final_weights()))
                        row["wall_time"] = state["wall_time"] = wall()
                        state["loss"] = last_loss
                        metrics.append(row)
                        if interval:
                            pace = (now - t_interval) / len(interval)
                        last_fields = status.fields(row)
                        log.info(status.line(row, total(), left()))
                        interval, t_interval = [], time.perf_counter()
                        if step % cfg.checkpoint_every == 0 or done or state["stopped_early"]:
                            save_checkpoint()
                    bar.update(step, total(), " · ".join(last_fields + [left()]))
                if n > 1 and decide:  # rank 0's decisions, on every rank before the next step
                    known = state.get("schedule_steps")
                    stop, fitted, stopped = team.agree(
                        [out_of_time, state.get("schedule_steps") or 0, state["stopped_early"]])
                    out_of_time, state["stopped_early"] = bool(stop), bool(stopped)
                    if fitted and known is None:
                        state["schedule_steps"], schedule = int(fitted), recipe.learning_rate(cfg, int(fitted))
        if state["step"] > 0 and lead:
            save_checkpoint()
        allreduce_s = collective.time_all_reduce() if collective is not None else 0.0
        agree_s = team.time_agree()
    finally:
        if bar:
            bar.close()
        if metrics:
            metrics.close()
        if cache:
            cache.close()
    if not lead:
        return {"rank": team.rank, "steps": state["step"]}
    summary = {
        "engine": engine,
        "steps": state["step"],
        "final_loss": state.get("loss"),
        "best_val_loss": state["best_val"],
        "stopped_early": state["stopped_early"],
        "batch_size": cfg.batch_size,
        "window": cfg.window,
        "seed": cfg.seed,
        "wall_time_s": state["wall_time"],
        "validation": setup.notes["validation"],
        "init": setup.notes.get("init"),
        "ema_decay": cfg.ema_decay,
        "preview_seconds_spent": preview.seconds_spent,
    }
    if engine != "local":
        summary.update(workers=n, batch_per_rank=per_rank, learning_rate=cfg.learning_rate,
                       lr_scaling=cfg.lr_scaling if cfg.batch_size != given_batch else "none",
                       allreduce_s=allreduce_s, allreduce_bytes=collective.grad_bytes if collective else 0,
                       agree_s=agree_s)
    save_artifact(setup, model, summary, metrics, weights=final_weights())
    if preview.seconds_spent:
        log.info("previews took %.1f s, %.1f%% of this run's %.0f s", preview.seconds_spent,
                 100 * preview.seconds_spent / max(time.perf_counter() - t0, 1e-9), time.perf_counter() - t0)
    log.info("model written to %s (loss %.4f after %d steps)", out.uri, state.get("loss") or float("nan"),
             state["step"])
    return summary
