"""Transform stage: audio files to a compact mu-law dataset, on Spark."""
from waveforms.dataset import Dataset, read_tracks  # the dataset part; re-exported for the documented API
from waveforms.transform.job import run

__all__ = ["Dataset", "read_tracks", "run"]
