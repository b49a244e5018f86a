"""WaveNet hyper-parameters: one dataclass and the named presets."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from waveforms.errors import UserError


def stacks(n: int, top: int) -> list[int]:
    """``n`` stacks of dilations 1, 2, 4, ... ``top``."""
    one = [2**i for i in range(top.bit_length()) if 2**i <= top]
    return one * n


@dataclass
class WaveNetConfig:
    dilations: list[int] = field(default_factory=lambda: stacks(2, 512))
    kernel_size: int = 2
    initial_kernel: int = 2
    residual_channels: int = 32
    dilation_channels: int = 32
    skip_channels: int = 128
    quantization: int = 256
    sample_rate: int = 16000
    num_genres: int = 0  # > 0: global conditioning on a genre id
    genre_channels: int = 16

    @property
    def receptive_field(self) -> int:
        """Samples of context seen by one output: (k0-1) + (k-1)·Σd + 1."""
        return (self.initial_kernel - 1) + (self.kernel_size - 1) * sum(self.dilations) + 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WaveNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown WaveNet config keys: {sorted(unknown)}")
        return cls(**data)


PRESETS: dict[str, WaveNetConfig] = {
    # seconds on a CPU: for tests
    "tiny": WaveNetConfig(dilations=stacks(1, 8), residual_channels=16, dilation_channels=16, skip_channels=32),
    # the demo: a few minutes on 2 cores learns something audible
    "small": WaveNetConfig(dilations=stacks(2, 128), residual_channels=24, dilation_channels=24, skip_channels=64),
    # 2 stacks of 1..512, 32/32/128
    "default": WaveNetConfig(),
    # 5 stacks of 1..512, 32/32/512
    "large": WaveNetConfig(dilations=stacks(5, 512), skip_channels=512),
}


def resolve(preset_or_config: str | WaveNetConfig | dict[str, Any]) -> WaveNetConfig:
    """A preset name, a config dict or a config, as a fresh ``WaveNetConfig``."""
    if isinstance(preset_or_config, WaveNetConfig):
        return dataclasses.replace(preset_or_config, dilations=list(preset_or_config.dilations))
    if isinstance(preset_or_config, dict):
        return WaveNetConfig.from_dict(preset_or_config)
    try:
        base = PRESETS[preset_or_config]
    except KeyError as exc:
        raise UserError(f"unknown preset {preset_or_config!r}; choose one of {sorted(PRESETS)}") from exc
    return resolve(base)
