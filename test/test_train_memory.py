"""Training memory does not grow with the dataset: windows are ranged reads, never the whole data."""
import subprocess
import sys

import numpy as np
import pytest

from helpers.train import train_argv
from waveforms.config.dataset import SAMPLE_RATE

# Run the CLI as a child of a fresh interpreter and report that child's peak RSS (KiB).
PEAK_RSS = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-m", "waveforms", *sys.argv[1:]], check=True,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def noise_dataset(root, n_tracks, samples_per_track):
    """Random codes: a shard per 5 tracks, written without holding them all in memory."""
    import json

    (root / "shards").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_tracks):
        shard = f"shards/part-{i // 5:05d}.u8"
        path = root / shard
        offset = path.stat().st_size if path.exists() else 0
        with open(path, "ab") as fh:
            fh.write(rng.integers(0, 256, samples_per_track, dtype=np.uint8).tobytes())
        rows.append({"id": f"n{i}", "shard": shard, "offset": offset, "num_samples": samples_per_track,
                     "sample_rate": SAMPLE_RATE, "mu": 255, "split": "val" if i % 10 == 9 else "train",
                     "dataset_id": f"noise-{n_tracks}", "genre": ""})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def peak_rss_kib(data, model_dir):
    args = train_argv(data, model_dir, "--steps", "20", "--window", "4000", "--set", "val_every=10")
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, *args], capture_output=True, text=True, timeout=300,
                         check=True)
    return int(out.stdout.strip())


@pytest.mark.slow  # a 200 MB dataset
def test_peak_rss_grows_less_than_20_percent_on_a_10x_larger_dataset(tmp_path):
    small = noise_dataset(tmp_path / "small", 10, 2_000_000)  # 20 MB
    large = noise_dataset(tmp_path / "large", 100, 2_000_000)  # 200 MB: loading it would double the RSS
    rss_small = peak_rss_kib(small, tmp_path / "m_small")
    rss_large = peak_rss_kib(large, tmp_path / "m_large")
    assert rss_small > 100_000  # TensorFlow alone is a few hundred MB: the measurement is real
    assert rss_large < 1.2 * rss_small, (rss_small, rss_large)
