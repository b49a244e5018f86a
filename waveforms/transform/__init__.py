"""Transform stage: audio files to a compact mu-law dataset, on Spark."""
from waveforms.transform.dataset import Dataset, read_tracks
from waveforms.transform.job import run

__all__ = ["Dataset", "read_tracks", "run"]
