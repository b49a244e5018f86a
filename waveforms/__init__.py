"""waveforms: scrape music, transform it on Spark, train a WaveNet, generate audio."""
__version__ = "0.1.0"
