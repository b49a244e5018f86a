"""WaveNet hyper-parameters: one dataclass, the presets as named sets of its architecture keys, and a
preset's architecture with ``[train]`` keys over it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from waveforms.config.dataset import SAMPLE_RATE
from waveforms.runtime.errors import UserError

ARCHITECTURE_KEYS: tuple[str, ...] = ("stacks", "layers_per_stack", "kernel_size", "residual_channels",
                                      "dilation_channels", "skip_channels", "genre_channels")
"""The fields of :class:`WaveNetConfig` that shape the network; each is also a ``[train]`` key
(0 there = the preset's value), and a preset names one value for each. ``test_architecture.py``
compares the three lists."""

PRESETS: dict[str, dict[str, int]] = {
    # 1 stack of 1..8, 16/16/32: seconds on a CPU, for tests
    "tiny": {"stacks": 1, "layers_per_stack": 4, "kernel_size": 2, "residual_channels": 16, "dilation_channels": 16,
             "skip_channels": 32, "genre_channels": 16},
    # 2 stacks of 1..128, 24/24/64: the demo's model. After the demo's 4-minute run on 2 cores its
    # validation loss is 3.22 nats per sample (a uniform guess: 5.55) and its output still sounds like noise
    "small": {"stacks": 2, "layers_per_stack": 8, "kernel_size": 2, "residual_channels": 24, "dilation_channels": 24,
              "skip_channels": 64, "genre_channels": 16},
    # 2 stacks of 1..512, 32/32/128
    "default": {"stacks": 2, "layers_per_stack": 10, "kernel_size": 2, "residual_channels": 32, "dilation_channels": 32,
                "skip_channels": 128, "genre_channels": 16},
    # 5 stacks of 1..512, 32/32/512
    "large": {"stacks": 5, "layers_per_stack": 10, "kernel_size": 2, "residual_channels": 32, "dilation_channels": 32,
              "skip_channels": 512, "genre_channels": 16},
}
"""Each preset is a named set of :data:`ARCHITECTURE_KEYS`; a key given in ``[train]`` overrides its value."""


@dataclass
class WaveNetConfig:
    """The architecture: ``stacks`` of ``layers_per_stack`` layers with dilations 1, 2, 4, ... each.

    The architecture keys come first, with the ``default`` preset's values; ``sample_rate`` and
    ``mu`` come from the dataset when training.
    """

    stacks: int = 2  # stacks of dilated layers
    layers_per_stack: int = 10  # layers per stack, dilations 1, 2, 4, ... 2^(n-1)
    kernel_size: int = 2  # taps of each dilated convolution
    residual_channels: int = 32  # channels of the residual stream
    dilation_channels: int = 32  # channels out of each gated unit
    skip_channels: int = 128  # channels of the skip sum and the output head
    genre_channels: int = 16  # genre embedding size (used when num_genres > 0)
    initial_kernel: int = 2
    mu: int = 255  # the mu-law parameter: codes 0..mu, ``classes`` of them
    sample_rate: int = SAMPLE_RATE
    num_genres: int = 0  # > 0: global conditioning on a genre id

    def __post_init__(self):
        if self.stacks < 1 or self.layers_per_stack < 1:
            raise UserError("a WaveNet needs stacks >= 1 and layers_per_stack >= 1")
        small = [k for k in (*ARCHITECTURE_KEYS, "initial_kernel", "mu") if getattr(self, k) < 1]
        if small:
            raise UserError(f"a WaveNet needs {', '.join(small)} >= 1")

    @property
    def classes(self) -> int:
        """Softmax width: one class per code, ``mu + 1``."""
        return self.mu + 1

    @property
    def dilations(self) -> list[int]:
        """1, 2, 4, ... 2^(layers_per_stack-1), once per stack."""
        return [2**i for i in range(self.layers_per_stack)] * self.stacks

    @property
    def receptive_field(self) -> int:
        """Samples of context seen by one output: (k0-1) + (k-1)·Σd + 1."""
        return (self.initial_kernel - 1) + (self.kernel_size - 1) * sum(self.dilations) + 1

    def to_dict(self) -> dict[str, Any]:
        """The fields, plus the derived ``dilations`` for readers of ``model.json``."""
        return {**dataclasses.asdict(self), "dilations": self.dilations}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WaveNetConfig":
        """Inverse of :meth:`to_dict`; also reads older forms: only a ``dilations`` list, and
        ``quantization`` (= mu + 1) in place of ``mu``."""
        known = {f.name for f in dataclasses.fields(cls)} | {"dilations", "quantization"}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown WaveNet config keys: {sorted(unknown)}")
        fields = {k: v for k, v in data.items() if k not in ("dilations", "quantization")}
        if "quantization" in data:
            mu = fields.setdefault("mu", data["quantization"] - 1)
            if mu != data["quantization"] - 1:
                raise UserError(f"quantization {data['quantization']} disagrees with mu {mu}")
        if "dilations" in data:
            stacks, per_stack = stacks_of(list(data["dilations"]))
            given = fields.setdefault("stacks", stacks), fields.setdefault("layers_per_stack", per_stack)
            if given != (stacks, per_stack):
                raise UserError(f"dilations {data['dilations']} disagree with stacks and layers_per_stack")
        return cls(**fields)


def stacks_of(dilations: list[int]) -> tuple[int, int]:
    """``(stacks, layers_per_stack)`` of a dilation list 1, 2, ... 2^(n-1) repeated; else a UserError."""
    per_stack = dilations.index(1, 1) if dilations.count(1) > 1 else len(dilations)
    stacks = len(dilations) // max(per_stack, 1)
    if not dilations or dilations != [2**i for i in range(per_stack)] * stacks:
        raise UserError(f"dilations must be stacks of 1, 2, 4, ...; got {dilations}")
    return stacks, per_stack


def architecture(preset: str, keys: dict[str, int] | None = None) -> dict[str, int]:
    """The architecture keys of ``preset`` with the non-zero ``keys`` in place of the preset's values."""
    try:
        base = PRESETS[preset]
    except KeyError as exc:
        raise UserError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}") from exc
    given = {k: v for k, v in (keys or {}).items() if v}
    unknown = set(given) - set(ARCHITECTURE_KEYS)
    if unknown:
        raise UserError(f"unknown architecture keys {sorted(unknown)}; known: {', '.join(ARCHITECTURE_KEYS)}")
    return {**base, **given}


def resolve(preset_or_config: str | WaveNetConfig | dict[str, Any]) -> WaveNetConfig:
    """A preset name, a config dict or a config, as a fresh ``WaveNetConfig``."""
    if isinstance(preset_or_config, WaveNetConfig):
        return dataclasses.replace(preset_or_config)
    if isinstance(preset_or_config, dict):
        return WaveNetConfig.from_dict(preset_or_config)
    return WaveNetConfig(**architecture(preset_or_config))
