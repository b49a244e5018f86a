"""The dataset format: what the transform writes and training, index, evaluate and the studio read.

``format`` holds the layout, the manifest and ranged reads; ``regions`` the
training and validation regions of its tracks; ``integrity`` the size and
SHA-256 checks of its shards; ``cache`` the bounded local cache of an s3://
dataset's shards.
"""
from waveforms.dataset.format import Dataset, DatasetError, read_tracks, split_for
from waveforms.dataset.regions import HELD_OUT_FRACTION, Region, genre_vocabulary, regions

__all__ = ["Dataset", "DatasetError", "HELD_OUT_FRACTION", "Region", "genre_vocabulary", "read_tracks",
           "regions", "split_for"]
