"""What the engines share: the dataset and model set-up (a new model or a parent's), the optimizer, and the
final artifact."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from waveforms import config as cfgmod
from waveforms import storage
from waveforms.config import TrainConfig
from waveforms.dataset import Dataset, Region, genre_vocabulary, regions
from waveforms.model import WaveNet, build
from waveforms.model.presets import ARCHITECTURE_KEYS, architecture
from waveforms.runtime.errors import UserError
from waveforms.train.metrics_log import MetricsLog
from waveforms.train.precision import describe_devices, effective, precision_model, precision_optimizer

log = logging.getLogger(__name__)



class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class Setup:
    cfg: TrainConfig
    ds: Dataset
    wavenet: WaveNet
    genres: list[str]
    train_regions: list[Region]
    val_regions: list[Region]
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def receptive_field(self) -> int:
        return self.wavenet.receptive_field


def prepare(cfg: TrainConfig) -> Setup:
    """Open the dataset, choose train/val regions and build the (untrained) WaveNet."""
    ds = Dataset.open(cfg.data)
    genres = genre_vocabulary(ds) if cfg.condition_on_genre else []
    overrides: dict[str, Any] = {"sample_rate": ds.sample_rate, "mu": ds.mu}
    if genres:
        overrides["num_genres"] = len(genres)
    notes: dict[str, Any] = {}
    if cfg.init_from:
        from waveforms.train.parent import from_parent

        wavenet, notes["parent"] = from_parent(cfg, ds, genres)
        log.info("starting from %s (%s, %s steps on %s)", cfg.init_from, notes["parent"]["preset"],
                 notes["parent"]["steps"], notes["parent"]["dataset"])
    else:
        import keras

        # The weights come from the seed alone: botocore's retry backoff draws from Python's global random, from
        # which Keras's unseeded initialisers draw too, so a retried read above would change them.
        keras.utils.set_random_seed(cfg.seed)
        wavenet = build(architecture(cfg.preset, {k: getattr(cfg, k) for k in ARCHITECTURE_KEYS}), **overrides)
    log.info("training on %s in %s", describe_devices(), effective(cfg.precision))
    length = wavenet.receptive_field + cfg.window
    train_regions, val_regions, how = regions(ds, length, genres)
    log.info("dataset %s: %d tracks, %d training regions; validation: %s", cfg.data, len(ds.tracks),
             len(train_regions), how)
    if not val_regions:
        log.warning("no validation region fits a window of %d samples: validation is off", length)
    if genres:
        log.info("conditioning on %d genres: %s", len(genres), genres)
    return Setup(cfg, ds, wavenet, genres, train_regions, val_regions, {**notes, "validation": how})


def optimizer(cfg: TrainConfig, total_steps: int | None = None, shift: bool = False):
    """Keras's ``Adam`` with the configured schedule
    (:func:`waveforms.train.schedules.learning_rate`) and clip.

    ``shift``: a schedule goes in a :class:`~waveforms.train.schedules.ShiftedSchedule`,
    whose offset and inner schedule the training loop sets (resume, a budget's refit).
    """
    import keras  # imports TensorFlow

    from waveforms.train.schedules import ShiftedSchedule, learning_rate

    rate = learning_rate(cfg, total_steps)
    if shift and not isinstance(rate, (int, float)):
        rate = ShiftedSchedule(rate)
    return keras.optimizers.Adam(learning_rate=rate, global_clipnorm=cfg.clip_norm if cfg.clip_norm > 0 else None)


def compile_model(model, cfg: TrainConfig, total_steps: int | None = None, shift: bool = False):
    """``model`` compiled; in bfloat16 or float16 (``precision``) a copy computing in that type with float32
    logits (use the result)."""
    import keras

    precision = effective(cfg.precision)
    model = precision_model(model, precision)
    opt = precision_optimizer(optimizer(cfg, total_steps, shift), precision)
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def scalar(value: Any) -> float:
    """A Keras loss return value (scalar, array or list) as a float."""
    import numpy as np

    return float(np.asarray(value).ravel()[0])


def mean_loss(model, batches: list) -> float:
    """Mean loss of ``model`` over fixed ``(x, y)`` batches (validation)."""
    return sum(scalar(model.test_on_batch(x, y)) for x, y in batches) / len(batches)


def check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"loss became {loss} at step {step}; lower the learning rate or clip_norm, "
            "then rerun (training resumes from the last checkpoint) or start over with --fresh"
        )


def save_artifact(setup: Setup, train_model, summary: dict[str, Any], metrics: MetricsLog,
                  weights: list | None = None) -> str:
    """The full (uncropped) model with the trained weights, config.json, loss.png and model.json (last).

    ``weights``: the ones to save (the moving average) instead of ``train_model``'s.
    They go to the metrics' output folder (``metrics.out``, local or s3://).
    """
    cfg, wavenet = setup.cfg, setup.wavenet
    wavenet.keras_model.set_weights(weights if weights is not None else train_model.get_weights())
    wavenet.meta.update({
        "dataset_id": setup.ds.dataset_id,
        "dataset": cfg.data,
        "transform": setup.ds.transform_settings(),  # primes are decoded like the training data
        "genres": setup.genres,
        "preset": setup.notes["parent"]["preset"] if "parent" in setup.notes else cfg.preset,
        "parent": setup.notes.get("parent"),
        "training": summary,
    })
    out = metrics.out
    storage.write_text(str(out.path("config.json")), cfgmod.to_json(cfg, "train"))
    out.upload("config.json")
    metrics.plot(f"WaveNet {cfg.preset} ({cfg.engine})")
    wavenet.save(out)
    return out.uri
