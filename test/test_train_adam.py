"""FusedAdam: Keras's Adam (the oracle) with one ResourceApplyAdam kernel per variable."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from waveforms.model import build
from waveforms.train.adam import FusedAdam

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model_and_batches(seed: int = 0):
    wavenet = build("tiny", sample_rate=16000)
    model = wavenet.training_model()
    rng = np.random.default_rng(seed)
    length = wavenet.receptive_field - 1 + 64
    batches = [(rng.integers(0, 256, (2, length)).astype("int32"), rng.integers(0, 256, (2, 64)).astype("int32"))
               for _ in range(3)]
    return model, batches


def _trained(make_optimizer, steps: int, dense: bool = True):
    """Weights, optimizer arrays and losses after ``steps`` steps from the same start (a fresh tiny model each time).

    ``dense``: gradients as dense tensors (the input conv's gathers give ``IndexedSlices`` otherwise).
    """
    keras.utils.set_random_seed(0)
    model, batches = _model_and_batches()
    opt = make_optimizer()
    opt.build(model.trainable_variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        if dense:
            grads = [tf.convert_to_tensor(g) for g in grads]
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses = [float(step(*batches[i % len(batches)])) for i in range(steps)]
    return model.get_weights(), [v.numpy() for v in opt.variables], losses, step


@pytest.mark.parametrize("clip", [None, 0.5])
def test_one_step_matches_keras_adam_to_float_rounding(clip):
    kw = dict(learning_rate=3e-3, global_clipnorm=clip)
    want_w, want_state, _, _ = _trained(lambda: keras.optimizers.Adam(**kw), 1)
    got_w, got_state, _, _ = _trained(lambda: FusedAdam(**kw), 1)
    for got, want in zip(got_w, want_w):  # each weight moves by about the learning rate
        np.testing.assert_allclose(got, want, rtol=0, atol=3e-3 * 1e-4)
    assert len(got_state) == len(want_state)
    assert len(got_state) == 2 + 2 * len(got_w)  # iterations, learning rate, then m and v of each variable
    for got, want in zip(got_state[2::2], want_state[2::2]):  # 1 - beta_1 in float32 is 2.4e-7 off Keras's
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-15)
    for got, want in zip(got_state[3::2], want_state[3::2]):  # 1 - beta_2 in float32 is 1.3e-5 off Keras's
        np.testing.assert_allclose(got, want, rtol=3e-5, atol=1e-20)


def test_from_keras_adams_state_at_each_step_one_fused_step_lands_where_keras_does():
    """The bias corrections, the moments and the clip at iterations 1..6, each from the same state."""
    def make(cls):
        keras.utils.set_random_seed(0)
        model, batches = _model_and_batches()
        opt = cls(learning_rate=3e-3, global_clipnorm=1.0)
        opt.build(model.trainable_variables)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = LOSS(y, model(x, training=True))
            grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
            opt.apply_gradients(zip(grads, model.trainable_variables))

        return model, opt, step, batches

    (k_model, k_opt, k_step, batches), (f_model, f_opt, f_step, _) = make(keras.optimizers.Adam), make(FusedAdam)
    for i in range(6):
        f_model.set_weights(k_model.get_weights())
        for mine, theirs in zip(f_opt.variables, k_opt.variables):
            mine.assign(theirs)
        k_step(*batches[i % 3])
        f_step(*batches[i % 3])
        assert int(f_opt.iterations) == int(k_opt.iterations) == i + 1
        for got, want in zip(f_model.get_weights(), k_model.get_weights()):
            np.testing.assert_allclose(got, want, rtol=0, atol=3e-3 * 1e-4)


def test_ten_steps_give_keras_adams_losses_with_a_tenth_of_the_ops():
    kw = dict(learning_rate=3e-3, global_clipnorm=1.0)
    _, want_state, want_losses, keras_step = _trained(lambda: keras.optimizers.Adam(**kw), 10)
    got_w, got_state, got_losses, step = _trained(lambda: FusedAdam(**kw), 10)
    # Adam moves a weight whose gradient is tiny beside sqrt(v) by about lr whatever its size, so a rounding
    # difference can flip such a step: compare the losses, not each weight, after several steps
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
    assert [s.shape for s in got_state] == [s.shape for s in want_state]  # a checkpoint's optimizer.npz fits both
    assert int(got_state[0]) == 10

    x, y = _model_and_batches()[1][0]
    ops = [op.type for op in step.get_concrete_function(x, y).graph.get_operations()]
    keras_ops = [op.type for op in keras_step.get_concrete_function(x, y).graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == len(got_w)  # one kernel per variable ...
    assert ops.count("Pow") == 2  # ... and the bias corrections once per step, not once per variable
    assert keras_ops.count("Pow") == 2 * len(got_w)
    assert len(ops) < len(keras_ops) - 20 * len(got_w)


def test_amsgrad_takes_keras_path_and_the_config_round_trips():
    kw = dict(learning_rate=3e-3, amsgrad=True)
    want_w, _, _, _ = _trained(lambda: keras.optimizers.Adam(**kw), 3)
    got_w, _, _, step = _trained(lambda: FusedAdam(**kw), 3)
    for got, want in zip(got_w, want_w):
        np.testing.assert_array_equal(got, want)
    assert "ResourceApplyAdam" not in [op.type for op in
                                       step.get_concrete_function(*_model_and_batches()[1][0]).graph.get_operations()]

    opt = FusedAdam(learning_rate=2e-3, beta_2=0.99, global_clipnorm=1.0)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is FusedAdam
    assert (again.beta_2, again.global_clipnorm, float(again.learning_rate)) == (0.99, 1.0, pytest.approx(2e-3))


def test_a_gathered_rows_gradient_is_applied_as_its_dense_sum():
    kw = dict(learning_rate=3e-3)
    dense_w, dense_state, _, _ = _trained(lambda: FusedAdam(**kw), 4)
    sparse_w, sparse_state, _, _ = _trained(lambda: FusedAdam(**kw), 4, dense=False)
    for got, want in zip(sparse_w + sparse_state, dense_w + dense_state):
        np.testing.assert_array_equal(got, want)
