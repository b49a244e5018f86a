"""The WaveNet in Keras 3: causal dilated convolutions, gated units, residual and skip paths.

The Keras model takes integer mu-law codes ``(batch, time)`` (and, when
conditioned, a genre id ``(batch,)``) and returns logits ``(batch, time, 256)``;
output ``t`` predicts sample ``t + 1``. The layers, their names and weight
shapes come from :mod:`waveforms.model.spec`.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from waveforms.model.presets import WaveNetConfig  # noqa: E402
from waveforms.model.spec import Weights, spec  # noqa: E402


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


def _conv(w: Weights, dilation: int = 0) -> layers.Conv1D:
    """A Conv1D from its spec: causal and dilated with ``dilation`` > 0, else a 1x1 over channels."""
    if dilation:
        return layers.Conv1D(w.outputs, w.width, dilation_rate=dilation, padding="causal", name=w.name)
    return layers.Conv1D(w.outputs, w.width, name=w.name)


def build_keras(cfg: WaveNetConfig, crop: int = 0) -> keras.Model:
    """The full WaveNet of :func:`spec`; ``crop`` > 0 drops that many leading outputs (training model)."""
    sp = spec(cfg)
    codes = keras.Input(shape=(None,), dtype="int32", name=sp.codes_input)
    inputs = [codes]
    x = OneHot(sp.quantization, name=sp.one_hot)(codes)
    x = _conv(sp.input_conv, 1)(x)
    genre_vec = None
    if sp.genre_input and sp.genre_embedding:
        genre = keras.Input(shape=(), dtype="int32", name=sp.genre_input)
        inputs.append(genre)
        emb = sp.genre_embedding
        genre_vec = layers.Embedding(emb.kernel[0], emb.outputs, name=emb.name)(genre)
    skips = []
    for layer in sp.residuals:
        h = _conv(layer.dilated, layer.dilation)(x)
        if genre_vec is not None and layer.cond:
            cond = layers.Dense(layer.cond.outputs, use_bias=layer.cond.use_bias, name=layer.cond.name)(genre_vec)
            h = TimeBroadcastAdd(name=layer.cond_add)(h, cond)
        z = GatedUnit(name=layer.gate)(h)
        skips.append(_conv(layer.skip)(z))
        if layer.residual:
            res = _conv(layer.residual)(z)
            x = layers.Add(name=layer.merge)([x, res])
    s = layers.Add(name=sp.sum_skips)(skips) if len(skips) > 1 else skips[0]
    s = layers.Activation("relu", name=sp.relu_1)(s)
    s = _conv(sp.head_1)(s)
    s = layers.Activation("relu", name=sp.relu_2)(s)
    logits = _conv(sp.logits)(s)
    if crop:
        logits = CropLeft(crop, name=sp.crop)(logits)
    return keras.Model(inputs if len(inputs) > 1 else codes, logits, name=sp.model)
