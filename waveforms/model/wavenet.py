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


def _time_slice(x, start, n=-1):
    """``x[:, start : start + n]`` (to the end when ``n`` is -1) of a ``(batch, time, c)`` tensor.

    A Slice, not a StridedSlice: TensorFlow's gradient of a Slice is a Pad,
    where a StridedSlice's gradient on CPU took half of a training step.
    """
    return ops.slice(x, (0, start, 0), (-1, n, -1))


@keras.saving.register_keras_serializable(package="waveforms")
class CropLeft(layers.Layer):
    """Drop the first ``n`` time steps: outputs whose receptive field is not full."""

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def call(self, x):
        return _time_slice(x, self.n)

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


# --- The training model: valid convolutions, computing only what the loss reads -------------------------------
#
# The causal model pads each dilated convolution on the left and computes every
# output of a window, of which training keeps the last T. The training model
# below gives exactly those T outputs with the same weights (the same layer names,
# weight shapes and weight order) but no padding: its input holds RF - 1 + T
# codes, each dilated convolution shortens the sequence by dilation·(k - 1), the
# residual stream is cropped on the left to match, and each skip 1x1 runs on the
# last T positions only.


def _matmul_last(x, kernel):
    """``x (batch, time, c) @ kernel (c, n)`` as one 2-D GEMM over batch·time rows."""
    shape = ops.shape(x)
    y = ops.matmul(ops.reshape(x, (-1, shape[-1])), kernel)
    return ops.reshape(y, (shape[0], shape[1], ops.shape(kernel)[-1]))


class _KernelBias(layers.Layer):
    """A layer holding a Conv1D's weights: kernel ``(width, n_in, n_out)`` then bias ``(n_out,)``."""

    def __init__(self, filters: int, width: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.width = width

    def _make_weights(self, n_in: int) -> None:
        self.kernel = self.add_weight(name="kernel", shape=(self.width, n_in, self.filters),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def build(self, input_shape):
        self._make_weights(int(input_shape[-1]))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "width": self.width}


@keras.saving.register_keras_serializable(package="waveforms")
class CodeConv(_KernelBias):
    """The first causal conv over one-hot codes, unpadded, as gathered kernel rows.

    ``one_hot(codes) ⊛ kernel`` at output ``t`` is ``Σ_j kernel[j, codes[t + j]]``:
    a row lookup per tap instead of a product with 256-channel one-hot vectors.
    Codes ``(batch, time)`` give ``(batch, time - width + 1, filters)``.
    """

    def __init__(self, filters: int, width: int, quantization: int, **kwargs):
        super().__init__(filters, width, **kwargs)
        self.quantization = quantization

    def build(self, input_shape):
        self._make_weights(self.quantization)

    def call(self, codes):
        codes = ops.cast(codes, "int32")
        n = ops.shape(codes)[1] - (self.width - 1)
        rows = ops.reshape(self.kernel, (self.width * self.quantization, self.filters))
        out = self.bias
        for j in range(self.width):
            out = out + ops.take(rows, codes[:, j : j + n] + j * self.quantization, axis=0)
        return out

    def compute_output_shape(self, input_shape):
        t = input_shape[1]
        return (input_shape[0], None if t is None else t - self.width + 1, self.filters)

    def get_config(self):
        return {**super().get_config(), "quantization": self.quantization}


@keras.saving.register_keras_serializable(package="waveforms")
class ValidDilatedConv(_KernelBias):
    """An unpadded dilated conv: the ``width`` taps side by side, then one GEMM.

    ``(batch, time, c)`` gives ``(batch, time - dilation·(width - 1), filters)``.
    """

    def __init__(self, filters: int, width: int, dilation: int, **kwargs):
        super().__init__(filters, width, **kwargs)
        self.dilation = dilation

    def call(self, x):
        if self.width == 1:
            return _matmul_last(x, self.kernel[0]) + self.bias
        n = ops.shape(x)[1] - self.dilation * (self.width - 1)
        taps = ops.concatenate([_time_slice(x, j * self.dilation, n) for j in range(self.width)], axis=-1)
        kernel = ops.reshape(self.kernel, (-1, self.filters))  # (width·c, filters), tap-major like the concat
        return _matmul_last(taps, kernel) + self.bias

    def compute_output_shape(self, input_shape):
        t = input_shape[1]
        return (input_shape[0], None if t is None else t - self.dilation * (self.width - 1), self.filters)

    def get_config(self):
        return {**super().get_config(), "dilation": self.dilation}


@keras.saving.register_keras_serializable(package="waveforms")
class Pointwise(_KernelBias):
    """A 1x1 conv (kernel ``(1, c, filters)``) as one GEMM."""

    def call(self, x):
        return _matmul_last(x, self.kernel[0]) + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)


def build_training_keras(cfg: WaveNetConfig) -> keras.Model:
    """The training model: codes ``(batch, RF - 1 + T)`` -> the causal model's last ``T`` logits.

    Its weighted layers are those of :func:`build_keras`, in the same order and
    with the same names and shapes, so weights move between the two with
    ``set_weights(get_weights())``.
    """
    sp = spec(cfg)
    codes = keras.Input(shape=(None,), dtype="int32", name=sp.codes_input)
    inputs = [codes]
    w0 = sp.input_conv
    x = CodeConv(w0.outputs, w0.width, sp.quantization, name=w0.name)(codes)
    genre_vec = None
    if sp.genre_input and sp.genre_embedding:
        genre = keras.Input(shape=(), dtype="int32", name=sp.genre_input)
        inputs.append(genre)
        emb = sp.genre_embedding
        genre_vec = layers.Embedding(emb.kernel[0], emb.outputs, name=emb.name)(genre)
    shrink = [layer.dilation * (layer.dilated.width - 1) for layer in sp.residuals]
    skips = []
    for i, layer in enumerate(sp.residuals):
        h = ValidDilatedConv(layer.dilated.outputs, layer.dilated.width, layer.dilation, name=layer.dilated.name)(x)
        if genre_vec is not None and layer.cond:
            cond = layers.Dense(layer.cond.outputs, use_bias=layer.cond.use_bias, name=layer.cond.name)(genre_vec)
            h = TimeBroadcastAdd(name=layer.cond_add)(h, cond)
        z = GatedUnit(name=layer.gate)(h)
        later = sum(shrink[i + 1 :])  # how much shorter the final output is than z
        skip_in = CropLeft(later, name=f"skip_crop_{i}")(z) if later else z
        skips.append(Pointwise(layer.skip.outputs, name=layer.skip.name)(skip_in))
        if layer.residual:
            res = Pointwise(layer.residual.outputs, name=layer.residual.name)(z)
            x = CropLeft(shrink[i], name=f"residual_crop_{i}")(x) if shrink[i] else x
            x = layers.Add(name=layer.merge)([x, res])
    s = layers.Add(name=sp.sum_skips)(skips) if len(skips) > 1 else skips[0]
    s = layers.Activation("relu", name=sp.relu_1)(s)
    s = Pointwise(sp.head_1.outputs, name=sp.head_1.name)(s)
    s = layers.Activation("relu", name=sp.relu_2)(s)
    logits = Pointwise(sp.logits.outputs, name=sp.logits.name)(s)
    return keras.Model(inputs if len(inputs) > 1 else codes, logits, name=f"{sp.model}_training")
