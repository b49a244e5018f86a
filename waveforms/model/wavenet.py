"""The WaveNet in Keras 3: causal dilated convolutions, gated units, residual and skip paths.

The Keras model takes integer mu-law codes ``(batch, time)`` (and, when
conditioned, a genre id ``(batch,)``) and returns logits ``(batch, time, 256)``;
output ``t`` predicts sample ``t + 1``. The layers, their names and weight
shapes come from :mod:`waveforms.model.spec`.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the model's layers are TensorFlow's; Keras reads it on import

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from waveforms.model.presets import WaveNetConfig  # noqa: E402
from waveforms.model.spec import Residual, Spec, Weights, spec  # noqa: E402

PACKAGE = "waveforms"  # the registered names are "waveforms>ClassName"
LAYERS: list[type] = []  # every layer class a saved model may name, in definition order


def _serializable(cls: type) -> type:
    """Register ``cls`` with Keras under :data:`PACKAGE` and list it in :data:`LAYERS`."""
    LAYERS.append(cls)
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


def custom_objects() -> dict[str, type]:
    """The model's own layers by class name and by registered name (for ``from_config`` and elephas)."""
    return {**{c.__name__: c for c in LAYERS}, **{f"{PACKAGE}>{c.__name__}": c for c in LAYERS}}


@_serializable
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


@_serializable
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


def _gate(x):
    f, g = ops.split(x, 2, axis=-1)
    return ops.tanh(f) * ops.sigmoid(g)


_FUSED_GATE = None  # the gate compiled by XLA, computing in float32 (built on first use)


def _fused_gate(x):
    """:func:`_gate` of a bfloat16/float16 ``x`` in float32, forward and backward fused into XLA loops.

    TensorFlow's own CPU kernels of the gate and its gradient (Tanh, Sigmoid,
    their Grad ops, Mul) run several times slower in bfloat16 than in float32
    (Eigen converts element by element); fused, a ``default`` training step
    in bfloat16 took about 0.85 of the time it took with the plain ops (CPU time,
    paired, 2 cores). The result has ``x``'s dtype.
    """
    global _FUSED_GATE
    if _FUSED_GATE is None:
        import tensorflow as tf

        _FUSED_GATE = tf.function(lambda t: ops.cast(_gate(ops.cast(t, "float32")), t.dtype), jit_compile=True,
                                  reduce_retracing=True)
    return _FUSED_GATE(x)


@_serializable
class GatedUnit(layers.Layer):
    """tanh(filter) · sigmoid(gate) on a tensor holding [filter | gate] channels (fused in float32 when the layer
    computes in a 16-bit type)."""

    def call(self, x):
        if keras.backend.backend() == "tensorflow" and keras.backend.standardize_dtype(x.dtype) != "float32":
            return _fused_gate(x)
        return _gate(x)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)


@_serializable
class TimeBroadcastAdd(layers.Layer):
    """x (batch, time, c) + v (batch, c), the same vector at every time step."""

    def call(self, x, v):
        return x + ops.expand_dims(v, 1)

    def compute_output_shape(self, x_shape, v_shape=None):
        return x_shape


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


@_serializable
class CodeConv(_KernelBias):
    """The first causal conv over one-hot codes, unpadded, as gathered kernel rows.

    ``one_hot(codes) ⊛ kernel`` at output ``t`` is ``Σ_j kernel[j, codes[t + j]]``:
    a row lookup per tap instead of a product with 256-channel one-hot vectors.
    Codes ``(batch, time)`` give ``(batch, time - width + 1, filters)``.
    """

    def __init__(self, filters: int, width: int, classes: int, **kwargs):
        super().__init__(filters, width, **kwargs)
        self.classes = classes

    def build(self, input_shape):
        self._make_weights(self.classes)

    def call(self, codes):
        codes = ops.cast(codes, "int32")
        n = ops.shape(codes)[1] - (self.width - 1)
        rows = ops.reshape(self.kernel, (self.width * self.classes, self.filters))
        out = self.bias
        for j in range(self.width):
            out = out + ops.take(rows, codes[:, j : j + n] + j * self.classes, axis=0)
        return out

    def compute_output_shape(self, input_shape):
        t = input_shape[1]
        return (input_shape[0], None if t is None else t - self.width + 1, self.filters)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


@_serializable
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


@_serializable
class Pointwise(_KernelBias):
    """A 1x1 conv (kernel ``(1, c, filters)``) as one GEMM."""

    def call(self, x):
        return _matmul_last(x, self.kernel[0]) + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)


# --- Both graphs from one loop ------------------------------------------------------------------------------
#
# :func:`_graph` wires the network of a :class:`~waveforms.model.spec.Spec` once:
# input conv, genre embedding, per layer the dilated conv, genre bias, gate,
# skip and residual 1x1s, then the head. What differs between the full (causal,
# padded) model and the training (valid, unpadded) model is how each conv is
# made and where the streams are cropped; :class:`_Causal` and :class:`_Valid`
# say that and nothing else.


class _Causal:
    """The full model's layers: causal, left-padded convolutions, every output computed."""

    def __init__(self, sp: Spec):
        self.sp = sp

    def codes_conv(self, codes):
        x = OneHot(self.sp.classes, name=self.sp.one_hot)(codes)
        return self.dilated(self.sp.input_conv, 1)(x)

    def dilated(self, w: Weights, dilation: int) -> layers.Layer:
        return layers.Conv1D(w.outputs, w.width, dilation_rate=dilation, padding="causal", name=w.name)

    def pointwise(self, w: Weights) -> layers.Layer:
        return layers.Conv1D(w.outputs, w.width, name=w.name)

    def skip_input(self, layer: Residual, z):
        return z

    def residual_stream(self, layer: Residual, x):
        return x


class _Valid(_Causal):
    """The training model's layers: unpadded convolutions, each shortening the sequence by ``dilation·(k - 1)``.

    The residual stream is cropped on the left to match each dilated conv's
    output, and each skip 1x1 runs only on the positions that reach the output.
    """

    def __init__(self, sp: Spec):
        super().__init__(sp)
        self.shrink = [layer.dilation * (layer.dilated.width - 1) for layer in sp.residuals]

    def codes_conv(self, codes):
        w = self.sp.input_conv
        return CodeConv(w.outputs, w.width, self.sp.classes, name=w.name)(codes)

    def dilated(self, w: Weights, dilation: int) -> layers.Layer:
        return ValidDilatedConv(w.outputs, w.width, dilation, name=w.name)

    def pointwise(self, w: Weights) -> layers.Layer:
        return Pointwise(w.outputs, name=w.name)

    def skip_input(self, layer: Residual, z):
        later = sum(self.shrink[layer.index + 1 :])  # how much shorter the final output is than z
        return CropLeft(later, name=f"skip_crop_{layer.index}")(z) if later else z

    def residual_stream(self, layer: Residual, x):
        n = self.shrink[layer.index]
        return CropLeft(n, name=f"residual_crop_{layer.index}")(x) if n else x


def _graph(sp: Spec, make: _Causal, name: str, crop: int = 0) -> keras.Model:
    """The WaveNet of ``sp`` with the convolutions ``make`` builds; ``crop`` > 0 drops that many leading outputs."""
    codes = keras.Input(shape=(None,), dtype="int32", name=sp.codes_input)
    inputs = [codes]
    x = make.codes_conv(codes)
    genre_vec = None
    if sp.genre_input and sp.genre_embedding:
        genre = keras.Input(shape=(), dtype="int32", name=sp.genre_input)
        inputs.append(genre)
        emb = sp.genre_embedding
        genre_vec = layers.Embedding(emb.kernel[0], emb.outputs, name=emb.name)(genre)
    skips = []
    for layer in sp.residuals:
        h = make.dilated(layer.dilated, layer.dilation)(x)
        if genre_vec is not None and layer.cond:
            cond = layers.Dense(layer.cond.outputs, use_bias=layer.cond.use_bias, name=layer.cond.name)(genre_vec)
            h = TimeBroadcastAdd(name=layer.cond_add)(h, cond)
        z = GatedUnit(name=layer.gate)(h)
        skips.append(make.pointwise(layer.skip)(make.skip_input(layer, z)))
        if layer.residual:
            res = make.pointwise(layer.residual)(z)
            x = layers.Add(name=layer.merge)([make.residual_stream(layer, x), res])
    s = layers.Add(name=sp.sum_skips)(skips) if len(skips) > 1 else skips[0]
    s = layers.Activation("relu", name=sp.relu_1)(s)
    s = make.pointwise(sp.head_1)(s)
    s = layers.Activation("relu", name=sp.relu_2)(s)
    logits = make.pointwise(sp.logits)(s)
    if crop:
        logits = CropLeft(crop, name=sp.crop)(logits)
    return keras.Model(inputs if len(inputs) > 1 else codes, logits, name=name)


def build_keras(cfg: WaveNetConfig, crop: int = 0) -> keras.Model:
    """The full WaveNet of :func:`spec`; ``crop`` > 0 drops that many leading outputs."""
    sp = spec(cfg)
    return _graph(sp, _Causal(sp), sp.model, crop)


def build_training_keras(cfg: WaveNetConfig) -> keras.Model:
    """The training model: codes ``(batch, RF - 1 + T)`` -> the causal model's last ``T`` logits.

    Its weighted layers are those of :func:`build_keras`, in the same order and
    with the same names and shapes, so weights move between the two with
    ``set_weights(get_weights())``.
    """
    sp = spec(cfg)
    return _graph(sp, _Valid(sp), f"{sp.model}_training")
