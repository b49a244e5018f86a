"""A stage's command line shows the stage's own lines, not TensorFlow's C++ start-up log."""
import os
import re
import subprocess
import sys

from train_helpers import tone_dataset, train_argv

# TensorFlow's C++ log line ("2026-01-01 12:00:00.123456: I tensorflow/...") and absl's ("E0000 00:00:...").
CPP_LOG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ )|absl::InitializeLog")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}  # as a user's shell has it
    return subprocess.run([sys.executable, "-m", "waveforms", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_train_and_generate_print_no_tensorflow_cpp_log_lines(tmp_path):
    data, model = tone_dataset(tmp_path / "ds", n_tracks=2), tmp_path / "model"
    train = _cli(*train_argv(data, model, "--steps", "2", "--set", "log_every=1"))
    assert train.returncode == 0, train.stderr
    gen = _cli("generate", "--model", str(model), "--seconds", "0.01", "--output", str(tmp_path / "g.wav"))
    assert gen.returncode == 0, gen.stderr
    for run in (train, gen):
        lines = (run.stdout + run.stderr).splitlines()
        assert lines, "the stage says what it did"
        noisy = [line for line in lines if CPP_LOG.search(line)]
        assert noisy == [], noisy
    assert (tmp_path / "g.wav").stat().st_size == 44 + 2 * 80  # 0.01 s at 8 kHz, 16-bit mono
