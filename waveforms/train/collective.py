"""One rank's side of synchronous data parallelism: TensorFlow's collective all-reduce.

Each of N processes holds an ordinary Keras model (plain variables) and
computes the gradient of its share of the step's batch; a
``MultiWorkerMirroredStrategy`` (collective ops: RING on CPUs, NCCL on GPUs)
sums the gradients of all ranks, and every rank applies the same summed
gradient with its own optimizer, so the replicas stay identical. The mean
loss of the global batch is the mean of the ranks' equal-share means, so the
gradient each rank applies is ``sum_r grad(loss_r) / N``: the gradient of one
step on the whole batch, clipped by the same global norm after the sum.

The strategy is made from ``TF_CONFIG`` and must exist before TensorFlow
runs its first op, so each rank is a fresh process (:mod:`waveforms.train.rank`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

DEFAULT_TIMEOUT_S = 600.0


def tf_config(peers: Sequence[str], rank: int) -> str:
    """The ``TF_CONFIG`` of rank ``rank`` among workers at ``peers`` (``host:port``, in rank order)."""
    return json.dumps({"cluster": {"worker": list(peers)}, "task": {"type": "worker", "index": rank}})


def set_threads(threads: int) -> None:
    """Give TensorFlow ``threads`` CPU threads (intra-op; inter-op 2); call before TensorFlow starts."""
    import tensorflow as tf

    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))


def make_strategy(timeout_s: float = DEFAULT_TIMEOUT_S, pack_bytes: int = 0):
    """The ``MultiWorkerMirroredStrategy`` of ``TF_CONFIG``; a collective that waits longer than ``timeout_s`` fails.

    ``pack_bytes`` > 0 splits an all-reduce of many tensors into packs of about that size (0: one pack).
    """
    import tensorflow as tf

    options = tf.distribute.experimental.CommunicationOptions(bytes_per_pack=int(pack_bytes),
                                                              timeout_seconds=timeout_s)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def summed(strategy, values: list) -> list:
    """Inside a ``tf.function``: the sums over all ranks of ``values`` (``values`` itself without a strategy)."""
    import tensorflow as tf

    if strategy is None:
        return list(values)

    def fn(*local):
        # identities placed on the replica's device: the collective needs a device to reduce to
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                              [tf.identity(v) for v in local])

    return list(strategy.experimental_local_results(strategy.run(fn, args=tuple(values)))[0])


def median_seconds(call: Callable[[], Any], repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``call``, after one call that traces and warms it up."""
    call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


@dataclass
class Collective:
    """This process's rank among ``count`` and the all-reduce that joins them (None for one process)."""

    rank: int = 0
    count: int = 1
    strategy: Any = None
    _reduce: Any = field(default=None, repr=False)

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensors: list) -> list:
        """The element-wise sums over all ranks of ``tensors`` (a list of float tensors or arrays)."""
        if self.strategy is None:
            return list(tensors)
        if self._reduce is None:
            import tensorflow as tf

            self._reduce = tf.function(lambda values: summed(self.strategy, values))
        return list(self._reduce(list(tensors)))

    def broadcast(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Rank 0's ``arrays`` on every rank (a float64 sum in which the other ranks add zeros: exact)."""
        if self.strategy is None:
            return arrays
        import tensorflow as tf

        send = [np.asarray(a, dtype=np.float64) for a in arrays]  # exact for float32 and counters below 2**53
        if not self.lead:
            send = [np.zeros_like(a) for a in send]
        got = self.all_reduce([tf.constant(a) for a in send])
        return [np.asarray(g.numpy()).astype(np.asarray(a).dtype) for g, a in zip(got, arrays)]

    def agree(self, values: Sequence[float]) -> list[float]:
        """Rank 0's small list of numbers on every rank (decisions: stop, schedule length)."""
        return [float(v) for v in self.broadcast([np.asarray(values, dtype=np.float64)])[0]]

    def time_agree(self, repeats: int = 5) -> float:
        """Seconds one :meth:`agree` of three numbers takes here (median of ``repeats``; 0 for one rank)."""
        if self.strategy is None:
            return 0.0
        return median_seconds(lambda: self.agree([0.0, 0.0, 0.0]), repeats)


def sync_model(team: Collective, model) -> None:
    """Give every rank rank 0's weights and optimizer state (the optimizer must be built)."""
    if team.count == 1:
        return
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    weights = team.broadcast(model.get_weights())
    model.set_weights(weights)
    opt_vars = list(opt.variables)
    for var, value in zip(opt_vars, team.broadcast([np.asarray(v.numpy()) for v in opt_vars])):
        var.assign(value)


class CollectiveStep:
    """One optimizer step of ``model`` on the global batch, from this rank's share of it.

    ``__call__(x, y)`` returns the global batch's mean loss (the same on every
    rank). Gradients are summed across ranks, divided by N, then handed to the
    model's optimizer, which clips them by the global norm and applies them.
    With ``ema`` (rank 0's moving average), the step's graph applies the
    average's deferred update (:meth:`waveforms.train.ema.EMA.defer`) once the
    gradients are computed, beside the all-reduce and before the weights change.
    """

    def __init__(self, model, team: Collective, ema=None):
        import keras
        import tensorflow as tf

        from waveforms.train.ema import NO_UPDATE

        self.model, self.team, self.ema = model, team, ema
        self._no_update = tf.constant(NO_UPDATE, tf.float32)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        opt = model.optimizer
        if not opt.built:
            opt.build(model.trainable_variables)
        scale = hasattr(opt, "scale_loss")
        n = float(team.count)
        strategy = team.strategy

        @tf.function(jit_compile=False, reduce_retracing=True)
        def step(x, y, ema_decay):
            variables = model.trainable_variables
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = self.loss_fn(y, logits)
                scaled = opt.scale_loss(loss) if scale else loss
            grads = [tf.convert_to_tensor(g) for g in tape.gradient(scaled, variables)]  # dense, not IndexedSlices
            if ema is not None:
                with tf.control_dependencies(grads):  # while the gradients travel; it reads the weights first
                    ema.assign(ema_decay)
            total = summed(strategy, [*grads, tf.reshape(tf.cast(loss, tf.float32), [1])])
            opt.apply_gradients(zip([g / n for g in total[:-1]], variables))
            return total[-1][0] / n

        self._step = step
        self.grad_bytes = int(sum(np.prod(v.shape) * 4 for v in model.trainable_variables))

    def __call__(self, x, y) -> float:
        import tensorflow as tf

        decay = tf.constant(self.ema.take_deferred(), tf.float32) if self.ema else self._no_update
        return float(self._step(x, y, decay))

    def time_all_reduce(self, repeats: int = 5) -> float:
        """Seconds one all-reduce of the gradients takes here (median of ``repeats``; 0 for one rank)."""
        if self.team.strategy is None:
            return 0.0
        import tensorflow as tf

        zeros = [tf.zeros(v.shape, tf.float32) for v in self.model.trainable_variables]
        return median_seconds(lambda: self.team.all_reduce(zeros)[-1].numpy(), repeats)


def from_env(timeout_s: float = DEFAULT_TIMEOUT_S, pack_bytes: int = 0) -> Collective:
    """The collective that ``TF_CONFIG`` describes (one process, no strategy, when it is unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return Collective()
    conf = json.loads(raw)
    count = len(conf["cluster"]["worker"])
    return Collective(int(conf["task"]["index"]), count, make_strategy(timeout_s, pack_bytes))
