"""An exponential moving average of the weights, updated in the graph after every step.

The average starts as the initial weights; step ``t`` (counted from 1) uses
decay ``min(ema_decay, (1 + t) / (10 + t))``, so early averages follow the
fast-moving weights instead of staying near the initialisation. The average
lives in its own variables: the training weights never see it. Checkpoints
carry it (``ema.npz``) together with its step count, so a resumed run goes on
bit for bit.

In the allreduce engine, rank 0 *defers* each update: it is counted now and
applied inside the next collective step's graph, while that step's gradients
travel (:meth:`EMA.assign`), so the other ranks do not wait for it at the
all-reduce. The weights it reads are the same either way (the step applies its
gradients after it), so the average is the same bit for bit; reading the
average applies a deferred update first.
"""
from __future__ import annotations

import numpy as np

NO_UPDATE = 1.0  # the decay that leaves the average as it is (d * avg + 0 * w)


def decay_at(decay: float, t: int) -> float:
    """The decay used by update number ``t`` (1, 2, ...)."""
    return min(decay, (1.0 + t) / (10.0 + t))


class EMA:
    """The moving average of ``model``'s weights (all of them, in ``model.weights`` order)."""

    def __init__(self, model, decay: float):
        import tensorflow as tf

        self.model, self.decay = model, decay
        self.updates = 0
        self.deferred = False  # update number ``updates`` is counted but not yet applied
        self._vars = [tf.Variable(w, trainable=False) for w in model.get_weights()]
        self._update = tf.function(self.assign, jit_compile=False, reduce_retracing=True)

    def assign(self, d) -> None:
        """The average moved towards the model's weights with decay ``d`` (a float32 scalar tensor); traceable
        into a larger graph."""
        import tensorflow as tf

        for avg, w in zip(self._vars, self.model.weights):
            avg.assign(d * avg + (1.0 - d) * tf.cast(w.value, avg.dtype))

    def update(self) -> None:
        """One update towards the model's weights now."""
        self.flush()
        self.updates += 1
        self._apply(decay_at(self.decay, self.updates))

    def defer(self) -> None:
        """Count one update towards the model's weights now; the caller's next graph applies it
        (:meth:`take_deferred`), or :meth:`flush`."""
        self.flush()
        self.updates += 1
        self.deferred = True

    def take_deferred(self) -> float:
        """The decay of the deferred update, for a graph that applies it with :meth:`assign` before it changes
        the weights (``NO_UPDATE`` when none is deferred)."""
        if not self.deferred:
            return NO_UPDATE
        self.deferred = False
        return decay_at(self.decay, self.updates)

    def flush(self) -> None:
        """Apply a deferred update now."""
        if self.deferred:
            self.deferred = False
            self._apply(decay_at(self.decay, self.updates))

    def _apply(self, d: float) -> None:
        import tensorflow as tf

        self._update(tf.constant(d, tf.float32))

    def weights(self) -> list[np.ndarray]:
        self.flush()
        return [np.asarray(v.numpy()) for v in self._vars]

    def set_weights(self, arrays: list[np.ndarray], updates: int) -> None:
        if len(arrays) != len(self._vars):
            raise ValueError(f"EMA state has {len(arrays)} arrays, the model {len(self._vars)}")
        for var, value in zip(self._vars, arrays):
            var.assign(value)
        self.updates, self.deferred = updates, False
