"""The architecture keys, declared once: the WaveNet's shape, and the presets as named sets of them.

:data:`KEYS` declares each key (name, type, help, bounds); the ``[train]`` fields
(:func:`train_fields`), the model's config fields (:func:`model_fields`) and
:data:`ARCHITECTURE_KEYS` are derived from it, and the ``preset`` choices from
:data:`PRESETS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from waveforms.config.metadata import opt


@dataclass(frozen=True)
class Key:
    """One architecture key: an int in ``1..max`` (0 in ``[train]`` means the preset's value)."""

    name: str
    max: int
    help: str
    unit: str = ""
    type: type = int


KEYS: tuple[Key, ...] = (
    Key("stacks", 16, "stacks of dilated layers"),
    Key("layers_per_stack", 14, "layers per stack, dilations 1, 2, 4, ... 2^(n-1)", "layers"),
    Key("kernel_size", 8, "taps of each dilated convolution", "taps"),
    Key("residual_channels", 1024, "channels of the residual stream", "channels"),
    Key("dilation_channels", 1024, "channels out of each gated unit", "channels"),
    Key("skip_channels", 2048, "channels of the skip sum and the output head", "channels"),
    Key("genre_channels", 256, "genre embedding size (condition_on_genre)", "channels"),
)

ARCHITECTURE_KEYS: tuple[str, ...] = tuple(k.name for k in KEYS)
"""The ``[train]`` keys that shape the network; a preset names one value for each."""

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

DEFAULT_PRESET = "default"  # the model config's defaults

T = TypeVar("T", bound=type)


def _insert(make: Callable[[Key], Any], after: str | None) -> Callable[[T], T]:
    """A class decorator (below ``@dataclass``) that adds a field per key, made by ``make``, after field ``after``."""

    def add(cls: T) -> T:
        own = cls.__dict__.get("__annotations__", {})
        names = list(own)
        at = names.index(after) + 1 if after else 0
        cls.__annotations__ = {**{n: own[n] for n in names[:at]}, **{k.name: k.type.__name__ for k in KEYS},
                               **{n: own[n] for n in names[at:]}}
        for k in KEYS:
            setattr(cls, k.name, make(k))
        return cls

    return add


def train_fields(after: str) -> Callable[[T], T]:
    """The ``[train]`` fields of the architecture keys (0 = the preset's value), after field ``after``."""
    return _insert(lambda k: opt(0, min=0, max=k.max, unit=k.unit, help=f"{k.help}; 0 = from the preset"), after)


def model_fields() -> Callable[[T], T]:
    """The model config's fields of the architecture keys, first, with the default preset's values."""
    return _insert(lambda k: PRESETS[DEFAULT_PRESET][k.name], None)
