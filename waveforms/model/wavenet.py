"""The WaveNet in Keras 3: causal dilated convolutions, gated units, residual and skip paths.

The Keras model takes integer mu-law codes ``(batch, time)`` (and, when
conditioned, a genre id ``(batch,)``) and returns logits ``(batch, time, 256)``;
output ``t`` predicts sample ``t + 1``. Layer names are stable so that fast
generation can read the weights by name.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from waveforms.model.presets import WaveNetConfig  # noqa: E402


@keras.saving.register_keras_serializable(package="waveforms")
class OneHot(layers.Layer):
    """Integer codes -> one-hot float vectors (the data stays uint8 on disk)."""

    def __init__(self, depth: int, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth

    def call(self, codes):
        return ops.one_hot(ops.cast(codes, "int32"), self.depth)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.depth)

    def get_config(self):
        return {**super().get_config(), "depth": self.depth}


@keras.saving.register_keras_serializable(package="waveforms")
class CropLeft(layers.Layer):
    """Drop the first ``n`` time steps: outputs whose receptive field is not full."""

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def call(self, x):
        return x[:, self.n :, :]

    def compute_output_shape(self, input_shape):
        t = input_shape[1]
        return (input_shape[0], None if t is None else t - self.n, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "n": self.n}


@keras.saving.register_keras_serializable(package="waveforms")
class GatedUnit(layers.Layer):
    """tanh(filter) · sigmoid(gate) on a tensor holding [filter | gate] channels."""

    def call(self, x):
        f, g = ops.split(x, 2, axis=-1)
        return ops.tanh(f) * ops.sigmoid(g)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)


@keras.saving.register_keras_serializable(package="waveforms")
class TimeBroadcastAdd(layers.Layer):
    """x (batch, time, c) + v (batch, c), the same vector at every time step."""

    def call(self, x, v):
        return x + ops.expand_dims(v, 1)

    def compute_output_shape(self, x_shape, v_shape=None):
        return x_shape


def build_keras(cfg: WaveNetConfig, crop: int = 0) -> keras.Model:
    """The full WaveNet; ``crop`` > 0 drops that many leading outputs (training model)."""
    codes = keras.Input(shape=(None,), dtype="int32", name="codes")
    inputs = [codes]
    x = OneHot(cfg.quantization, name="one_hot")(codes)
    x = layers.Conv1D(cfg.residual_channels, cfg.initial_kernel, padding="causal", name="causal_in")(x)
    genre_vec = None
    if cfg.num_genres > 0:
        genre = keras.Input(shape=(), dtype="int32", name="genre")
        inputs.append(genre)
        genre_vec = layers.Embedding(cfg.num_genres, cfg.genre_channels, name="genre_embedding")(genre)
    skips = []
    for i, d in enumerate(cfg.dilations):
        h = layers.Conv1D(
            2 * cfg.dilation_channels, cfg.kernel_size, dilation_rate=d, padding="causal", name=f"dilated_{i}"
        )(x)
        if genre_vec is not None:
            cond = layers.Dense(2 * cfg.dilation_channels, use_bias=False, name=f"cond_{i}")(genre_vec)
            h = TimeBroadcastAdd(name=f"cond_add_{i}")(h, cond)
        z = GatedUnit(name=f"gate_{i}")(h)
        skips.append(layers.Conv1D(cfg.skip_channels, 1, name=f"skip_{i}")(z))
        if i < len(cfg.dilations) - 1:  # the last layer's residual output would feed nothing
            res = layers.Conv1D(cfg.residual_channels, 1, name=f"residual_{i}")(z)
            x = layers.Add(name=f"residual_add_{i}")([x, res])
    s = layers.Add(name="skip_sum")(skips) if len(skips) > 1 else skips[0]
    s = layers.Activation("relu", name="relu_1")(s)
    s = layers.Conv1D(cfg.skip_channels, 1, name="head_1")(s)
    s = layers.Activation("relu", name="relu_2")(s)
    logits = layers.Conv1D(cfg.quantization, 1, name="logits")(s)
    if crop:
        logits = CropLeft(crop, name="crop")(logits)
    return keras.Model(inputs if len(inputs) > 1 else codes, logits, name="wavenet")


def weights_by_name(model: keras.Model) -> dict[str, list]:
    """Layer name -> its weights as numpy arrays (for fast generation)."""
    return {layer.name: [w.numpy() if hasattr(w, "numpy") else w for w in layer.get_weights()] for layer in model.layers}
