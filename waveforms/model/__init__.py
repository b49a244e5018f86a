"""WaveNet model: config and presets, the layer spec, Keras builder, versioned artifact, training checkpoints,
and fast generation from it (``fastgen``, ``sampling``)."""
from waveforms.model.artifact import WaveNet, build, load
from waveforms.model.presets import WaveNetConfig

__all__ = ["WaveNet", "WaveNetConfig", "build", "load"]
