"""waveforms: scrape music, transform it on Spark, train a WaveNet, generate audio."""
from waveforms import tflog as _tflog

__version__ = "0.1.0"

_tflog.quiet_import()  # TensorFlow 2.20+ ignores TF_CPP_MIN_LOG_LEVEL at import; this applies it
