"""An exponential moving average of the weights, updated in the graph after every step.

The average starts as the initial weights; step ``t`` (counted from 1) uses
decay ``min(ema_decay, (1 + t) / (10 + t))``, so early averages follow the
fast-moving weights instead of staying near the initialisation. The average
lives in its own variables: the training weights never see it. Checkpoints
carry it (``ema.npz``) together with its step count, so a resumed run goes on
bit for bit.
"""
from __future__ import annotations

import numpy as np


def decay_at(decay: float, t: int) -> float:
    """The decay used by update number ``t`` (1, 2, ...)."""
    return min(decay, (1.0 + t) / (10.0 + t))


class EMA:
    """The moving average of ``model``'s weights (all of them, in ``model.weights`` order)."""

    def __init__(self, model, decay: float):
        import tensorflow as tf

        self.model, self.decay = model, decay
        self.updates = 0
        self._vars = [tf.Variable(w, trainable=False) for w in model.get_weights()]

        @tf.function(jit_compile=False, reduce_retracing=True)
        def _update(d):
            for avg, w in zip(self._vars, self.model.weights):
                avg.assign(d * avg + (1.0 - d) * tf.cast(w.value, avg.dtype))

        self._update = _update

    def update(self) -> None:
        import tensorflow as tf

        self.updates += 1
        self._update(tf.constant(decay_at(self.decay, self.updates), tf.float32))

    def weights(self) -> list[np.ndarray]:
        return [np.asarray(v.numpy()) for v in self._vars]

    def set_weights(self, arrays: list[np.ndarray], updates: int) -> None:
        if len(arrays) != len(self._vars):
            raise ValueError(f"EMA state has {len(arrays)} arrays, the model {len(self._vars)}")
        for var, value in zip(self._vars, arrays):
            var.assign(value)
        self.updates = updates
