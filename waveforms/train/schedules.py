"""The learning-rate schedule: warmup, then cosine or step decay, as Keras schedules of the optimizer step.

The schedule is a function of the optimizer's step counter, which checkpoints
carry, so a resumed run follows it exactly; the optimizer evaluates it inside
the training step's graph (:class:`ShiftedSchedule`), not the loop before each step. With a ``max_minutes``
budget the loop fits the cosine schedule to the steps the budget holds at the measured pace, and refits it
when the pace moves (:mod:`waveforms.train.pace`; the fitted length is checkpointed). ``cosine`` uses
Keras's own ``CosineDecay`` (its warmup included), so engines that serialise the optimizer need nothing of
ours to rebuild it.
"""
from __future__ import annotations

from typing import Any

from waveforms.config import TrainConfig


def learning_rate(cfg: TrainConfig, total_steps: int | None = None) -> Any:
    """A float (constant, no warmup) or a Keras schedule of the optimizer step."""
    import keras

    total = max(1, total_steps or cfg.steps)
    warmup = min(cfg.warmup_steps, total - 1)
    if cfg.lr_schedule == "cosine":
        start = cfg.learning_rate / warmup if warmup else cfg.learning_rate
        return keras.optimizers.schedules.CosineDecay(
            start, decay_steps=max(1, total - warmup), alpha=cfg.min_lr_ratio,
            warmup_target=cfg.learning_rate if warmup else None, warmup_steps=warmup)
    if cfg.lr_schedule == "constant" and warmup == 0:
        return cfg.learning_rate
    return WarmupStepDecay(cfg.learning_rate, warmup, cfg.lr_decay_every if cfg.lr_schedule == "step" else 0,
                           cfg.lr_decay_factor, cfg.min_lr_ratio)


def lr_at(schedule: Any, step: int) -> float:
    """The learning rate a schedule (or float) gives at ``step``."""
    return float(schedule(step)) if callable(schedule) else float(schedule)


def _register(cls):
    import keras

    return keras.saving.register_keras_serializable("waveforms")(cls)


def _schedule_base():
    import keras

    return keras.optimizers.schedules.LearningRateSchedule


class WarmupStepDecay(_schedule_base()):  # type: ignore[misc]
    """Linear warmup to ``peak`` over ``warmup`` steps, then ×``factor`` every ``every`` steps (0: never),
    never below ``min_ratio`` × ``peak``."""

    def __init__(self, peak: float, warmup: int, every: int, factor: float, min_ratio: float):
        self.peak, self.warmup, self.every, self.factor, self.min_ratio = peak, warmup, every, factor, min_ratio

    def __call__(self, step):
        from keras import ops

        s = ops.cast(step, "float32")
        ramp = ops.minimum(1.0, (s + 1.0) / float(max(1, self.warmup))) if self.warmup else 1.0
        mult = 1.0
        if self.every > 0:
            k = ops.floor(ops.maximum(s - float(self.warmup), 0.0) / float(self.every))
            mult = ops.maximum(ops.power(float(self.factor), k), float(self.min_ratio))
        return self.peak * ramp * mult

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup": self.warmup, "every": self.every, "factor": self.factor,
                "min_ratio": self.min_ratio}


WarmupStepDecay = _register(WarmupStepDecay)


class ShiftedSchedule(_schedule_base()):  # type: ignore[misc]
    """``schedule(step + offset)``, its decay stretched by ``stretch``, in the graph of the step that reads the rate.

    ``step`` is the optimizer's update counter (``iterations``, which
    checkpoints carry). The training loop keeps ``offset`` at its own step
    less that counter (0 unless a run's updates were skipped or its optimizer
    state is new), and an elephas worker at the updates the run has done.
    ``stretch`` maps the steps after the warmup onto the schedule's own:
    :meth:`fit_to` sets it so that a cosine decay built for one length spans
    another (a budget's fit and refits). Both are variables, so a traced step
    follows them without retracing; replacing ``schedule`` needs a new trace.
    """

    def __init__(self, schedule, offset: int = 0, stretch: float = 1.0):
        import keras

        if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        self.schedule = schedule
        self.offset = keras.Variable(int(offset), dtype="int64", trainable=False, name="schedule_offset")
        self.stretch = keras.Variable(float(stretch), dtype="float32", trainable=False, name="schedule_stretch")

    def _warmup(self) -> float:
        return float(getattr(self.schedule, "warmup_steps", 0) or getattr(self.schedule, "warmup", 0) or 0)

    def __call__(self, step):
        from keras import ops

        s = ops.cast(ops.cast(step, "int64") + self.offset, "float32")
        start = self._warmup()
        return self.schedule(ops.where(s > start, start + (s - start) * self.stretch, s))

    def fit_to(self, total: int | None) -> None:
        """Stretch a cosine decay so that it ends at step ``total`` (None: its own length)."""
        decay = getattr(self.schedule, "decay_steps", None)
        if total is None or decay is None:
            self.stretch.assign(1.0)
            return
        self.stretch.assign(float(decay) / max(1.0, total - self._warmup()))

    def get_config(self) -> dict[str, Any]:
        import keras

        return {"schedule": keras.optimizers.schedules.serialize(self.schedule), "offset": int(self.offset.numpy()),
                "stretch": float(self.stretch.numpy())}


ShiftedSchedule = _register(ShiftedSchedule)


def shifted(optimizer) -> ShiftedSchedule | None:
    """The :class:`ShiftedSchedule` that sets ``optimizer``'s rate (a loss-scale optimizer's inner one's), if any."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    rate = getattr(inner, "_learning_rate", None)
    return rate if isinstance(rate, ShiftedSchedule) else None
