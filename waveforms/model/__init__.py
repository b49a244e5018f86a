"""WaveNet model: presets, Keras builder, versioned artifact."""
from waveforms.model.artifact import WaveNet, build, load
from waveforms.model.presets import PRESETS, WaveNetConfig

__all__ = ["WaveNet", "WaveNetConfig", "PRESETS", "build", "load"]
