"""The training loop, for one process (the local engine) or one rank of N (the allreduce engine).

Every rank runs this loop on its share of each step's batch; the step itself
is Keras's ``train_on_batch`` in one process, or a collective step
(:class:`waveforms.train.collective.CollectiveStep`) whose all-reduced
gradient makes it one optimizer step on the whole batch. Rank 0 alone writes:
checkpoints, ``metrics.jsonl``, validation, previews, the moving average and the
artifact; its decisions (stop for the budget or early stopping, the fitted
schedule) reach the other ranks at every logged step.

The loop reads top to bottom: :class:`RunState` is what a run carries from
step to step (saved whole in each checkpoint); :class:`Trainer` sets a run up,
then :meth:`Trainer.run` repeats :meth:`~Trainer.step` (one optimizer step),
:meth:`~Trainer.periodic` (rank 0: the budget, then logging, validation,
previews and checkpoints when due) and :meth:`~Trainer.agree` (rank 0's
decisions on every rank).

Resumable: every ``checkpoint_every`` steps (and at the end) the weights,
optimizer state, step and early-stopping state are checkpointed; batches are a
pure function of ``(seed, step)``, so a resumed run sees the same data as an
uninterrupted one, whatever the number of ranks.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable

import numpy as np

from waveforms.config import TrainConfig
from waveforms.dataset.cache import open_cache
from waveforms.model import WaveNetConfig, checkpoint
from waveforms.runtime import progress
from waveforms.runtime.errors import DiskFullError, UserError
from waveforms.runtime.progress import bits
from waveforms.storage import OutputDir
from waveforms.storage.s3retry import StorageError, bounded
from waveforms.train import previews, recipe, schedules, status
from waveforms.train.collective import Collective, CollectiveStep, sync_model
from waveforms.train.common import Setup, check_finite, compile_model, mean_loss, prepare, save_artifact, scalar
from waveforms.train.ema import EMA
from waveforms.train.metrics_log import METRICS, TENSORBOARD, VAL_BITS, MetricsLog
from waveforms.train.pace import WINDOW, Pace, refit
from waveforms.train.precision import effective
from waveforms.train.windows import Prefetcher, WindowSampler, shared_reader

log = logging.getLogger(__name__)

ENGINES = ("local", "allreduce")  # engines that run this loop; their checkpoints resume each other


def train(cfg: TrainConfig) -> dict[str, Any]:
    """The local engine: this loop in this process (Keras ``train_on_batch``). Trains (or resumes), writes the
    artifact (local or s3://) and returns the training summary."""
    with OutputDir(cfg.model_dir) as out:
        return run(cfg, out, evaluate=lambda model, batches: mean_loss(model, batches))  # read at each call


def start_fresh(out: OutputDir) -> None:
    """``--fresh``: remove the checkpoints, ``metrics.jsonl``, TensorBoard logs and previews of the model folder
    ``out``, in its working copy and at its target (local or ``s3://``)."""
    checkpoint.clear(out)
    out.remove(METRICS, TENSORBOARD, previews.DIR)


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


@dataclass
class RunState:
    """What a run carries from step to step; saved whole in each checkpoint's state (with what identifies it)."""

    step: int = 0
    wall_time: float = 0.0
    loss: float | None = None  # the mean training loss of the last logged interval
    best_val: float | None = None
    bad_checks: int = 0  # validation checks since the best one (early stopping)
    stopped_early: bool = False
    schedule_steps: int | None = None  # the cosine schedule's length once fitted to a budget

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> "RunState":
        """The state in a checkpoint's ``state.json`` (its other keys identify the run, not its progress)."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if saved.get(f.name) is not None})

    def to_saved(self) -> dict[str, Any]:
        return asdict(self)


def start_state(setup: Setup, model, out: OutputDir) -> RunState:
    """Resume from the newest checkpoint (fetched from S3 if need be) unless ``--fresh``; the state to continue from."""
    cfg, model_dir = setup.cfg, out.uri
    if cfg.fresh:
        start_fresh(out)
    saved = checkpoint.pull(out)
    if saved is None:
        out.remove(METRICS)  # rows of a run that never checkpointed
        return RunState()
    if not _same_model(saved.get("model_config"), setup.wavenet.config) or saved.get("engine") not in ENGINES:
        raise checkpoint.CheckpointError(
            f"the checkpoint in {model_dir} was made for another model or engine; rerun with --fresh"
        )
    if saved.get("seed") != cfg.seed or saved.get("batch_size") != cfg.batch_size or saved.get("window") != cfg.window:
        log.warning("seed, batch size or window differ from the checkpoint's; resuming anyway")
    check_precision(saved.get("precision"), effective(cfg.precision), model_dir)
    checkpoint.restore(out.local, model)
    out.download(METRICS)  # truncated to the checkpoint's step by the caller
    log.info("resuming from step %d (%s)", saved["step"], checkpoint.latest_name(out.local))
    return RunState.from_saved(saved)


def check_precision(saved: str | None, now: str, model_dir: str) -> None:
    """Refuse to resume a float16 run's checkpoint in another precision, or another's in float16.

    Weights are float32 in every precision, and float32 and bfloat16 resume each
    other's checkpoints; float16's optimizer carries a loss scale the others lack.
    """
    if saved and (saved == "float16") != (now == "float16"):
        raise checkpoint.CheckpointError(
            f"the checkpoint in {model_dir} was written in {saved}, whose optimizer state does not move to {now} "
            f"(float16 scales the loss); resume with precision = {saved}, or start over with --fresh (or fine-tune "
            "from the saved model with init_from)")


def start_ema(cfg: TrainConfig, model, out: OutputDir, step: int) -> EMA | None:
    """The moving average of the weights (None when ``ema_decay`` is 0), restored from the checkpoint."""
    if cfg.ema_decay <= 0:
        return None
    ema = EMA(model, cfg.ema_decay)
    if step > 0:
        arrays = checkpoint.load_ema(out.local)
        if arrays is None:
            log.warning("the checkpoint has no moving average of the weights: it starts from the current weights")
        else:
            ema.set_weights(arrays, int((checkpoint.load_state(out.local) or {}).get("ema_updates", step)))
    return ema


def for_workers(cfg: TrainConfig, workers: int) -> TrainConfig:
    """``cfg`` with the global batch and learning rate of ``workers`` ranks (:mod:`waveforms.train.recipe`)."""
    batch = recipe.global_batch(cfg, workers)
    return replace(cfg, batch_size=batch, learning_rate=recipe.scaled_learning_rate(cfg, batch))


class Trainer:
    """One run of the loop as rank ``team.rank``: everything it needs, set up once."""

    def __init__(self, cfg: TrainConfig, out: OutputDir | None, team: Collective, engine: str,
                 evaluate: Callable[[Any, list], float]):
        self.team, self.engine, self.evaluate, self.out = team, engine, evaluate, out
        self.n, self.lead, self.given_batch = team.count, team.lead, cfg.batch_size
        self.cfg = cfg = for_workers(cfg, team.count)
        seed_everything(cfg.seed)
        self.setup = setup = prepare(cfg)
        if not cfg.init_from:  # a resumed run's checkpoint replaces these weights
            setup.notes.update(recipe.initialise(setup, cfg.init))
        self.model = compile_model(setup.wavenet.training_model(), cfg, shift=True)
        self.state = start_state(setup, self.model, out) if self.lead else RunState()
        if self.n > 1:
            sync_model(team, self.model)
            self.agree(start=True)
        self.rate = schedules.shifted(self.model.optimizer)  # None for a constant rate
        if self.rate is not None:  # the schedule follows this run's steps from the optimizer's counter on
            self.rate.offset.assign(self.state.step - int(self.model.optimizer.iterations))
        self.use_schedule(self.state.schedule_steps)
        self.metrics = MetricsLog(out) if self.lead else None
        if self.metrics:
            self.metrics.truncate(self.state.step)
        self.ema = start_ema(cfg, self.model, out, self.state.step) if self.lead else None
        # validation and previews read the moving average through their own copy of the model
        self.eval_model = compile_model(setup.wavenet.training_model(), cfg) if self.ema else self.model
        self.preview = previews.Previewer(setup.wavenet, out, self.metrics, cfg.preview_seconds, cfg.seed,
                                          genre=0 if setup.genres else None) if self.lead else None
        self.collective_step = (None if engine == "local" and self.n == 1
                           else CollectiveStep(self.model, team, ema=self.ema))
        self.reader = shared_reader(cfg.reads_in_flight)
        self.cache = open_cache(setup.ds, cfg.shard_cache_dir, cfg.shard_cache_gb)
        self.sampler = self._sampler(setup.train_regions)
        self.val_batches = (self._sampler(setup.val_regions).fixed_batches(cfg.val_batches)
                            if setup.val_regions and self.lead else None)
        self.out_of_time = False
        self.interval: list[float] = []  # losses since the last logged row
        self.pace: float | None = None  # seconds per step over the last logged interval
        self.last_fields: list[str] = []
        # the budget's pace: wall time per step over recent rows, one-off costs (the step's trace, the first
        # validation and preview, which compile) left out; the first interval holds the step's trace
        self.budget_pace = Pace(WINDOW * cfg.max_minutes * 60)
        self.one_off, self.validated, self.previewed = True, False, False
        self.t_row = time.perf_counter()
        self.wall0 = self.state.wall_time
        self.t0 = self.t_interval = time.perf_counter()
        self.bar = progress.Progress("train", self.total(), "steps", eta=False, plain=False) if self.lead else None

    def _sampler(self, regions) -> WindowSampler:
        cfg, setup = self.cfg, self.setup
        return WindowSampler(setup.ds, regions, setup.receptive_field, cfg.window, cfg.batch_size, cfg.seed,
                             with_genre=bool(setup.genres), reader=self.reader, cache=self.cache)

    # --- the loop -----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to ``steps``, the budget or early stopping; rank 0 writes the artifact and returns the summary."""
        cfg, state = self.cfg, self.state
        try:
            with Prefetcher(self.batch, state.step, self.sampler.prefetch_depth()) as batches:
                while state.step < cfg.steps and not state.stopped_early and not self.out_of_time:
                    self.step(*next(batches))
                    # Ranks agree on rank 0's decisions at row steps only (one collective fewer per step), so
                    # with several ranks the budget is checked there and may run over by up to log_every steps.
                    decide = self.n == 1 or self.row_due(state.step)
                    if self.lead:
                        self.periodic(decide)
                    if self.n > 1 and decide:
                        self.agree()
            if state.step > 0 and self.lead:
                self.save_checkpoint()
            allreduce_s = self.collective_step.time_all_reduce() if self.collective_step is not None else 0.0
            agree_s = self.team.time_agree()
        except (StorageError, DiskFullError) as exc:
            raise self.stopped(exc) from exc
        finally:
            self.close()
        if not self.lead:
            return {"rank": self.team.rank, "steps": state.step}
        return self.finish(allreduce_s, agree_s)

    def stopped(self, exc: StorageError | DiskFullError) -> UserError:
        """The error a run stops with when S3 stayed unreachable or a disk filled: where a rerun resumes, after a
        checkpoint of this very step where it can be written (S3 unreachable, ``model_dir`` local)."""
        state, out = self.state, self.out
        if out is None or not self.lead:
            return type(exc)(f"training stopped at step {state.step}: {exc}")
        if isinstance(exc, StorageError) and state.step > 0 and not out.remote:
            try:
                self.save_checkpoint()
            except UserError as also:
                log.warning("no checkpoint at step %d: %s", state.step, also)
        saved = None if out.remote else (checkpoint.load_state(out.local) or {}).get("step")
        resume = (f"the checkpoint at step {saved} in {out.uri}" if saved is not None
                  else f"the last checkpoint uploaded to {out.uri}" if out.remote else "the start (no checkpoint)")
        return type(exc)(f"training stopped at step {state.step}: {exc}; the same command resumes from {resume}")

    def batch(self, step: int):
        """This rank's share of the batch of ``step`` (a pure function of seed and step)."""
        if self.n == 1:
            return self.sampler.batch(step)
        share = self.cfg.batch_size // self.n
        return self.sampler.batch(step, part=slice(self.team.rank * share, (self.team.rank + 1) * share))

    def use_schedule(self, total_steps: int | None) -> None:
        """The schedule for ``total_steps`` (None: ``steps``) as the optimizer's: its cosine stretched to that length
        through a variable the traced step reads (a budget's fit and refits cost no retrace)."""
        self.schedule = schedules.learning_rate(self.cfg, total_steps)
        if self.rate is not None:
            self.rate.fit_to(total_steps)

    def last_rate(self) -> float:
        """The learning rate of the update just applied."""
        if self.rate is None:
            return schedules.lr_at(self.schedule, 0)
        return float(self.rate(self.model.optimizer.iterations - 1))

    def step(self, x, y) -> None:
        """One optimizer step at the schedule's rate; the moving average follows it (with the collective step,
        inside the next step's graph: :meth:`waveforms.train.ema.EMA.defer`)."""
        state = self.state
        if self.collective_step is None:
            loss = scalar(self.model.train_on_batch(x, y))
        else:
            loss = self.collective_step(x, y)
        state.step += 1
        if self.ema and self.collective_step is not None:
            self.ema.defer()
        elif self.ema:
            self.ema.update()
        check_finite(loss, state.step)
        self.interval.append(loss)

    def row_due(self, step: int) -> bool:
        """Whether ``step`` writes a metrics row whatever the clock says: the same answer on every rank."""
        cfg = self.cfg
        return (step % cfg.log_every == 0 or step % cfg.val_every == 0 or step % cfg.checkpoint_every == 0
                or step == cfg.steps or previews.due(step, cfg.preview_every, cfg.val_every, step == cfg.steps))

    def periodic(self, decide: bool) -> None:
        """Rank 0 after a step: stop for the budget; log, validate, preview and checkpoint when due; then (at a
        row, with the pace that row measured) fit the schedule to the budget, or refit it (``decide``: a step at
        which the ranks agree, so decisions may change). The row reports the rate its step applied."""
        cfg, state = self.cfg, self.state
        self.out_of_time = (decide and state.step < cfg.steps and cfg.max_minutes > 0
                            and self.wall() >= cfg.max_minutes * 60)
        if self.out_of_time:
            log.info("stopping at step %d: the %.1f-minute budget is spent", state.step, cfg.max_minutes)
        done = state.step == cfg.steps or self.out_of_time
        if self.row_due(state.step) or done:
            self.log_row(done)
        if decide and self.row_due(state.step) and not done:
            self.refit()
        self.bar.update(state.step, self.total(), " · ".join(self.last_fields + [self.left()]))

    def refit(self) -> None:
        """Fit the cosine schedule to the budget at the measured pace, or refit it when the pace has moved."""
        cfg, state = self.cfg, self.state
        fitted = refit(cfg, state.step, self.wall(), self.budget_pace.seconds_per_step(), state.schedule_steps)
        if fitted:
            was = state.schedule_steps
            state.schedule_steps = fitted
            self.use_schedule(fitted)
            log.info("learning-rate schedule %s to the %.1f-minute budget: %d steps%s",
                     "fitted" if was is None else "refitted", cfg.max_minutes, fitted,
                     "" if was is None else f" (was {was:,})")

    def log_row(self, done: bool) -> None:
        """The metrics row of this step: loss, validation, preview when due; then a checkpoint when due."""
        cfg, state, step = self.cfg, self.state, self.state.step
        validate = bool(self.val_batches) and (step % cfg.val_every == 0 or done)
        preview_due = previews.due(step, cfg.preview_every, cfg.val_every, done)
        row: dict[str, Any] = {"step": step, "lr": self.last_rate()}
        now = time.perf_counter()
        steps = len(self.interval)
        one_off = self.one_off or (validate and not self.validated) or (preview_due and not self.previewed)
        self.validated, self.previewed = self.validated or validate, self.previewed or preview_due
        if self.interval:
            row["loss"] = state.loss = float(np.mean(self.interval))
            row["samples_per_s"] = len(self.interval) * cfg.batch_size * cfg.window / (now - self.t_interval)
            self.pace = (now - self.t_interval) / len(self.interval)
        if self.ema and (validate or preview_due):
            self.eval_model.set_weights(self.ema.weights())
        if validate:
            self.validate(row)
        if preview_due:
            row.update(self.preview(step, self.final_weights()))
        row["wall_time"] = state.wall_time = self.wall()
        self.metrics.append(row)
        self.last_fields = status.fields(row)
        log.info(status.line(row, self.total(), self.left()))
        self.interval, self.t_interval = [], time.perf_counter()
        self.budget_pace.add(steps, self.t_interval - self.t_row, one_off)
        self.t_row, self.one_off = self.t_interval, False
        if step % cfg.checkpoint_every == 0 or done or state.stopped_early:
            self.save_checkpoint()

    def validate(self, row: dict[str, Any]) -> None:
        """The validation loss on the probe batches into ``row``; early stopping's count of checks without
        improvement."""
        state = self.state
        val = self.evaluate(self.eval_model, self.val_batches)
        row.update({"val_loss": val, VAL_BITS: bits(val)})
        if state.best_val is None or val < state.best_val:
            state.best_val, state.bad_checks = val, 0
            return
        state.bad_checks += 1
        if 0 < self.cfg.early_stopping_patience <= state.bad_checks:
            state.stopped_early = True
            log.info("early stopping at step %d: no validation improvement in %d checks", state.step, state.bad_checks)

    def agree(self, start: bool = False) -> None:
        """Rank 0's decisions on every rank: at the start its step too (it alone read the checkpoint); later
        whether to stop (the budget, early stopping) and the schedule's fitted length."""
        state = self.state
        first = state.step if start else self.out_of_time
        known = state.schedule_steps
        head, fitted, stopped = self.team.agree([first, state.schedule_steps or 0, state.stopped_early])
        if start:
            state.step = int(head)
        else:
            self.out_of_time = bool(head)
        state.stopped_early = bool(stopped)
        if fitted and int(fitted) != known:  # rank 0's first fit or a refit
            state.schedule_steps = int(fitted)
            if not start:
                self.use_schedule(int(fitted))

    # --- what the loop reports and leaves behind ----------------------------------------------------------
    def wall(self) -> float:
        return self.wall0 + (time.perf_counter() - self.t0)

    def total(self) -> int | None:
        return status.total_steps(self.cfg.steps, self.cfg.max_minutes, self.state.schedule_steps)

    def left(self) -> str:
        return status.time_left(self.state.step, self.total(), self.wall(), self.cfg.max_minutes, self.pace)

    def final_weights(self) -> list[np.ndarray]:
        return self.ema.weights() if self.ema else self.model.get_weights()

    def save_checkpoint(self) -> None:
        cfg = self.cfg
        checkpoint.save(self.out, self.model, {
            **self.state.to_saved(), "engine": self.engine, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "window": cfg.window, "model_config": self.setup.wavenet.config.to_dict(),
            "precision": effective(cfg.precision),
            "ema_updates": self.ema.updates if self.ema else 0,
        }, ema=self.ema.weights() if self.ema else None)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        if self.metrics:
            self.metrics.close()
        if self.cache:
            self.cache.close()

    def finish(self, allreduce_s: float, agree_s: float) -> dict[str, Any]:
        """Rank 0: the artifact (model, config, loss plot, model.json) and the run's summary."""
        cfg, state, setup = self.cfg, self.state, self.setup
        summary = {
            "engine": self.engine, "steps": state.step, "final_loss": state.loss, "best_val_loss": state.best_val,
            "stopped_early": state.stopped_early, "batch_size": cfg.batch_size, "window": cfg.window,
            "seed": cfg.seed, "wall_time_s": state.wall_time, "validation": setup.notes["validation"],
            "init": setup.notes.get("init"), "ema_decay": cfg.ema_decay,
            "preview_seconds_spent": self.preview.seconds_spent,
        }
        if self.engine != "local":
            summary.update(workers=self.n, batch_per_rank=cfg.batch_size // self.n, learning_rate=cfg.learning_rate,
                           lr_scaling=cfg.lr_scaling if cfg.batch_size != self.given_batch else "none",
                           allreduce_s=allreduce_s, agree_s=agree_s,
                           allreduce_bytes=self.collective_step.grad_bytes if self.collective_step else 0)
        save_artifact(setup, self.model, summary, self.metrics, weights=self.final_weights())
        spent = time.perf_counter() - self.t0
        if self.preview.seconds_spent:
            log.info("previews took %.1f s, %.1f%% of this run's %.0f s", self.preview.seconds_spent,
                     100 * self.preview.seconds_spent / max(spent, 1e-9), spent)
        log.info("model written to %s (loss %.4f after %d steps)", self.out.uri,
                 state.loss if state.loss is not None else float("nan"), state.step)
        return summary


def run(cfg: TrainConfig, out: OutputDir | None, team: Collective | None = None, engine: str = "local",
        evaluate: Callable[[Any, list], float] = mean_loss) -> dict[str, Any]:
    """Train (or resume) as rank ``team.rank``; rank 0 writes the artifact to ``out`` and returns the summary.

    ``evaluate(model, batches)`` is the validation loss; other ranks return ``{"rank": r, "steps": n}``.
    S3 outages are retried for ``cfg.s3_outage_s`` (in a rank's own process too).
    """
    with bounded(cfg.s3_outage_s):
        return Trainer(cfg, out, team or Collective(), engine, evaluate).run()
