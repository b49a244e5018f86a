"""Adam whose update is one TensorFlow kernel per variable: Keras's ``Adam``, state and config unchanged.

Keras's ``Adam.update_step`` builds about 40 graph ops per variable (two
powers, casts, the moments' reads and assigns, the step's arithmetic); for the
100 variables of ``small`` that is 3,600 of the training step's 7,600 ops, each
paying the executor's per-op cost on a CPU. :class:`FusedAdam` computes the
step's scalars once and then runs TensorFlow's ``ResourceApplyAdam`` (the same
formula, ``m``, ``v`` and the variable updated in one pass) per variable. Its
variables, their order and its config are Adam's, so checkpoints
(``optimizer.npz``) move between the two.

It agrees with ``Adam`` to float32 rounding: one step from the same state
lands within 3e-8, and the kernel forms ``1 - beta`` in float32 where Keras
forms it in float64 (``0.100000024`` against ``0.1`` for ``beta_1 = 0.9``).
AMSGrad and a distribution strategy with several replicas take Keras's own path.
Measured (``bench/bench_train.py --paired-step``, one thread, window 2000): a
step 1.9 ms shorter for ``small`` and 5.3 ms for ``default`` at 2 windows
(5-6%), within the noise at 8.
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="waveforms")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with the per-variable update fused into ``ResourceApplyAdam``."""

    def _fused(self) -> bool:
        return not self.amsgrad and self._distribution_strategy.num_replicas_in_sync == 1

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self._fused():
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.constant(self.beta_1, tf.float32)
        beta_2 = tf.constant(self.beta_2, tf.float32)
        scalars = dict(beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                       lr=tf.cast(learning_rate, tf.float32), beta1=beta_1, beta2=beta_2,
                       epsilon=tf.constant(self.epsilon, tf.float32))
        for grad, variable in zip(grads, trainable_variables):
            index = self._get_variable_index(variable)
            var = _tf_variable(variable)
            if var.dtype != tf.float32:  # the kernel's scalars are float32; other dtypes take Keras's path
                self.update_step(grad, variable, learning_rate)
                continue
            tf.raw_ops.ResourceApplyAdam(var=var.handle, m=_tf_variable(self._momentums[index]).handle,
                                         v=_tf_variable(self._velocities[index]).handle,
                                         grad=tf.cast(grad, var.dtype), **scalars)


def _tf_variable(variable) -> tf.Variable:
    """The ``tf.Variable`` behind a Keras variable (or the variable itself)."""
    return variable.value if isinstance(variable, keras.Variable) else variable
