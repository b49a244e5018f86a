"""The WaveNet's layer structure, declared once from a config.

Both the Keras builder (:func:`waveforms.model.wavenet.build_keras`) and the
fast generator's weight extraction (:meth:`waveforms.model.fastgen.FastWeights.from_keras`)
read this spec, so every Keras layer name and weight shape lives here only.
The names are part of the saved-model format: change them and old models no
longer load into fast generation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from waveforms.model.presets import WaveNetConfig


@dataclass(frozen=True)
class Weights:
    """A Keras layer with weights: its name and the shapes of its arrays, kernel first."""

    name: str
    shapes: tuple[tuple[int, ...], ...]

    @property
    def kernel(self) -> tuple[int, ...]:
        return self.shapes[0]

    @property
    def outputs(self) -> int:
        return self.shapes[0][-1]

    @property
    def width(self) -> int:
        """The kernel's extent in time (Conv1D kernels are ``(width, in, out)``)."""
        return self.shapes[0][0]

    @property
    def use_bias(self) -> bool:
        return len(self.shapes) > 1


def conv(name: str, width: int, n_in: int, n_out: int) -> Weights:
    """A Conv1D with bias: kernel ``(width, n_in, n_out)``, bias ``(n_out,)``."""
    return Weights(name, ((width, n_in, n_out), (n_out,)))


@dataclass(frozen=True)
class Residual:
    """Residual layer ``index``: dilated conv, optional genre bias, gate, skip and residual 1x1s."""

    index: int
    dilation: int
    dilated: Weights  # Conv1D (k, R, 2D): [filter | gate] outputs
    cond: Weights | None  # Dense (E, 2D), no bias: the genre embedding's bias per layer
    skip: Weights  # Conv1D (1, D, S)
    residual: Weights | None  # Conv1D (1, D, R); None for the last layer, whose output feeds nothing
    cond_add: str
    gate: str
    merge: str  # the Add of the residual stream and this layer's residual output


@dataclass(frozen=True)
class Spec:
    """The whole network, input to logits."""

    codes_input: str
    genre_input: str | None
    one_hot: str
    classes: int  # one per mu-law code
    input_conv: Weights  # Conv1D (k0, Q, R) over one-hot codes
    genre_embedding: Weights | None  # Embedding (G, E)
    residuals: tuple[Residual, ...]
    sum_skips: str
    relu_1: str
    head_1: Weights  # Conv1D (1, S, S)
    relu_2: str
    logits: Weights  # Conv1D (1, S, Q)
    crop: str
    model: str

    @property
    def dilations(self) -> list[int]:
        return [layer.dilation for layer in self.residuals]

    def with_weights(self) -> list[Weights]:
        """Every layer that holds weights, in build order."""
        out = [self.input_conv] + ([self.genre_embedding] if self.genre_embedding else [])
        for layer in self.residuals:
            out += [w for w in (layer.dilated, layer.cond, layer.skip, layer.residual) if w is not None]
        return out + [self.head_1, self.logits]


def spec(cfg: WaveNetConfig) -> Spec:
    """The layer structure of ``cfg``'s WaveNet."""
    q, r, d, s = cfg.classes, cfg.residual_channels, cfg.dilation_channels, cfg.skip_channels
    conditioned = cfg.num_genres > 0
    n = len(cfg.dilations)
    residuals = tuple(
        Residual(
            index=i,
            dilation=dil,
            dilated=conv(f"dilated_{i}", cfg.kernel_size, r, 2 * d),
            cond=Weights(f"cond_{i}", ((cfg.genre_channels, 2 * d),)) if conditioned else None,
            skip=conv(f"skip_{i}", 1, d, s),
            residual=conv(f"residual_{i}", 1, d, r) if i < n - 1 else None,
            cond_add=f"cond_add_{i}",
            gate=f"gate_{i}",
            merge=f"residual_add_{i}",
        )
        for i, dil in enumerate(cfg.dilations)
    )
    return Spec(
        codes_input="codes",
        genre_input="genre" if conditioned else None,
        one_hot="one_hot",
        classes=q,
        input_conv=conv("causal_in", cfg.initial_kernel, q, r),
        genre_embedding=Weights("genre_embedding", ((cfg.num_genres, cfg.genre_channels),)) if conditioned else None,
        residuals=residuals,
        sum_skips="skip_sum",
        relu_1="relu_1",
        head_1=conv("head_1", 1, s, s),
        relu_2="relu_2",
        logits=conv("logits", 1, s, q),
        crop="crop",
        model="wavenet",
    )


def read(model: Any, weights: Weights) -> list[np.ndarray]:
    """The arrays of layer ``weights.name`` in a Keras ``model``, checked against the spec's shapes."""
    arrays = [np.asarray(a) for a in model.get_layer(weights.name).get_weights()]
    shapes = tuple(a.shape for a in arrays)
    if shapes != weights.shapes:
        raise ValueError(f"layer {weights.name!r}: weights of shapes {shapes}, the spec says {weights.shapes}")
    return arrays
