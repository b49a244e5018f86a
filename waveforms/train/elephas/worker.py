"""What runs on the executors for the elephas engine: workers that keep their model between epochs.

elephas's own workers rebuild the Keras model from JSON, compile it and trace a
new train function in every task, about as long as a short epoch's training.
Spark reuses its Python workers (``spark.python.worker.reuse``, on by default),
so these workers keep the compiled model, its traced train function and its
optimizer in a module-level cache keyed by the model JSON, the optimizer config
(less the schedule offset) and the loss. Each task then only sets the broadcast
weights, resets the optimizer to its initial state (elephas's semantics: a fresh
optimizer per epoch) and moves the learning-rate schedule to the updates done so
far, so that a decaying schedule spans the whole run.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterator

import keras
import numpy as np
from elephas.utils import subtract_params
from elephas.worker import AsynchronousSparkWorker, SparkWorker

from waveforms.train.precision import configure_devices
from waveforms.train.schedules import ShiftedSchedule, shifted

log = logging.getLogger(__name__)


def _lr_parent(optimizer_config: dict[str, Any]) -> dict[str, Any]:
    """The config dict holding ``learning_rate`` (a loss-scale optimizer's inner optimizer's)."""
    config = optimizer_config["config"]
    while "inner_optimizer" in config:
        config = config["inner_optimizer"]["config"]
    return config


def shifted_optimizer_config(optimizer, offset: int) -> dict[str, Any]:
    """``optimizer`` serialised, its learning-rate schedule (if any) starting at step ``offset``."""
    config = keras.optimizers.serialize(optimizer)
    parent = _lr_parent(config)
    if isinstance(parent.get("learning_rate"), dict):
        inner = parent["learning_rate"]
        if inner.get("class_name") == "ShiftedSchedule":
            inner = inner["config"]["schedule"]
        parent["learning_rate"] = {"module": None, "class_name": "ShiftedSchedule",
                                   "registered_name": "waveforms>ShiftedSchedule",
                                   "config": {"schedule": inner, "offset": int(offset)}}
    return config


def _offset_of(optimizer_config: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The schedule offset, and the config with offset 0 (the cache key's part)."""
    config = copy.deepcopy(optimizer_config)
    lr = _lr_parent(config).get("learning_rate")
    if isinstance(lr, dict) and lr.get("class_name") == "ShiftedSchedule":
        offset = int(lr["config"]["offset"])
        lr["config"]["offset"] = 0
        return offset, config
    return 0, config


@dataclass
class _Entry:
    model: Any
    optimizer_state: list[np.ndarray]  # the optimizer's variables as first built
    builds: int = 1
    uses: int = 0


_CACHE: dict[str, _Entry] = {}


def cache_info() -> dict[str, int]:
    """How this Python worker's cache has served: models built and tasks served (for tests)."""
    return {"models": len(_CACHE), "builds": sum(e.builds for e in _CACHE.values()),
            "uses": sum(e.uses for e in _CACHE.values())}


def _key(model_json: str, optimizer_config: dict[str, Any], loss: Any, metrics: Any) -> str:
    loss_key = keras.losses.serialize(loss) if isinstance(loss, keras.losses.Loss) else loss
    return json.dumps([model_json, optimizer_config, loss_key, metrics], sort_keys=True, default=str)


def worker_model(model_json: str, optimizer_config: dict[str, Any], loss: Any, metrics: Any,
                 custom_objects: dict[str, Any]):
    """The compiled model for this task: cached if this Python worker has built it before, else new.

    Either way its optimizer is in its initial state and its schedule starts at the offset in
    ``optimizer_config``; the caller sets the weights.
    """
    offset, base = _offset_of(optimizer_config)
    key = _key(model_json, base, loss, metrics)
    entry = _CACHE.get(key)
    if entry is None:
        _CACHE.clear()  # one model per worker process: a new run's model replaces the last one's
        configure_devices()
        model = keras.models.model_from_json(model_json, custom_objects)
        with keras.saving.custom_object_scope(custom_objects):
            optimizer = keras.optimizers.deserialize(base)
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
        model.optimizer.build(model.trainable_variables)
        entry = _CACHE[key] = _Entry(model, [np.array(v.numpy()) for v in model.optimizer.variables])
    else:
        for variable, value in zip(entry.model.optimizer.variables, entry.optimizer_state):
            variable.assign(value)
    entry.uses += 1
    schedule = shifted(entry.model.optimizer)
    if schedule is not None:
        schedule.offset.assign(offset)
    return entry.model


def _arrays(data_iterator: Iterator) -> tuple[np.ndarray, np.ndarray]:
    pairs = list(data_iterator)
    return np.asarray([x for x, _ in pairs]), np.asarray([y for _, y in pairs])


class CachedSparkWorker(SparkWorker):
    """elephas's synchronous worker, on the cached model: weight deltas and the history of one fit."""

    def train(self, data_iterator):
        x, y = _arrays(data_iterator)
        model = worker_model(self.json, self.master_optimizer, self.master_loss, self.master_metrics,
                             self.custom_objects)
        model.set_weights(self.parameters.value)
        before = model.get_weights()
        history = None
        if x.shape[0] > self.train_config.get("batch_size"):
            history = model.fit(x, y, **self.train_config)
        yield [subtract_params(before, model.get_weights()), history.history if history else None]


class CachedAsynchronousSparkWorker(AsynchronousSparkWorker):
    """elephas's asynchronous worker (per-epoch or per-batch updates to the parameter server), cached."""

    def train(self, data_iterator):
        x, y = _arrays(data_iterator)
        if x.size == 0:
            return
        model = worker_model(self.json, self.master_optimizer, self.master_loss, self.master_metrics,
                             self.custom_objects)
        config = dict(self.train_config)
        epochs = config.pop("epochs", 1)
        batch_size = config.get("batch_size")
        n = x.shape[0]
        for _ in range(epochs):
            if self.frequency == "epoch":
                before = self.client.get_parameters()
                model.set_weights(before)
                if n > batch_size:
                    model.fit(x, y, epochs=1, **config)
                self.client.update_parameters(subtract_params(before, model.get_weights()))
            elif self.frequency == "batch":
                if n <= batch_size:
                    continue
                for start in range(0, n, batch_size):
                    before = self.client.get_parameters()
                    model.set_weights(before)
                    model.train_on_batch(x[start:start + batch_size], y[start:start + batch_size])
                    self.client.update_parameters(subtract_params(before, model.get_weights()))
            else:
                raise ValueError(f"frequency must be epoch or batch, not {self.frequency!r}")
        yield []
