"""elephas's own environment: its tests run there, the main environment hands it elephas runs,
and without it ``--engine elephas`` is a clear error naming the command that installs it."""
import json
import os
import re
import subprocess
import sys

import pytest

from helpers import elephas as env
from helpers.train import tone_dataset
from waveforms.config import ElephasConfig, TrainConfig
from waveforms.runtime.errors import UserError
from waveforms.train import run
from waveforms.train.elephas import env as elephas_env

ROOT = env.ROOT


def test_the_main_environment_has_none_of_elephas_pins():
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import pyspark
    import tensorflow as tf

    with pytest.raises(PackageNotFoundError):
        version("elephas")
    assert not elephas_env.here()
    assert int(numpy.__version__.split(".")[0]) >= 2
    assert tuple(map(int, pyspark.__version__.split(".")[:2])) >= (4, 1)
    assert tuple(map(int, tf.__version__.split(".")[:2])) >= (2, 20)


def test_without_its_environment_elephas_is_a_clear_error_naming_the_install_command(tmp_path, monkeypatch):
    monkeypatch.delenv(elephas_env.PYTHON_VAR, raising=False)
    monkeypatch.setattr(elephas_env, "candidates", lambda: [tmp_path / "nowhere" / "bin" / "python"])
    cfg = TrainConfig(data=str(tmp_path / "ds"), model_dir=str(tmp_path / "m"), engine="elephas", preset="tiny")
    with pytest.raises(UserError, match=r"run `make setup`.*WAVEFORMS_ELEPHAS_PYTHON"):
        run(cfg)
    monkeypatch.setenv(elephas_env.PYTHON_VAR, str(tmp_path / "missing-python"))
    with pytest.raises(UserError, match=r"WAVEFORMS_ELEPHAS_PYTHON=.*missing-python is not an executable"):
        run(cfg)
    assert not (tmp_path / "m").exists()


def test_the_cli_names_the_install_command_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "waveforms", "train", "--data", str(tmp_path), "--model-dir",
                           str(tmp_path / "m"), "--engine", "elephas"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, elephas_env.PYTHON_VAR: str(tmp_path / "no-python")})
    assert done.returncode == 1
    assert "waveforms train: error: WAVEFORMS_ELEPHAS_PYTHON=" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # elephas training on Spark in a second interpreter
def test_the_main_environment_hands_an_elephas_run_to_its_environment(tmp_path):
    data = tone_dataset(tmp_path / "ds")
    out = tmp_path / "model"
    common = dict(data=str(data), model_dir=str(out), preset="tiny", engine="elephas", master="local[2]",
                  workers=2, batch_size=4, window=64, seed=2, learning_rate=0.01, clip_norm=1.0)
    assert run(TrainConfig(**common, elephas=ElephasConfig(epochs=1, windows_per_worker=16))) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["engine"] == "elephas" and meta["training"]["epochs"] == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    # a user's error in the elephas environment is a UserError here, with its message
    with pytest.raises(UserError, match="windows_per_worker must exceed batch_size"):
        run(TrainConfig(**common, elephas=ElephasConfig(epochs=1, windows_per_worker=4)))


@pytest.mark.slow  # the elephas tests, in elephas's environment: several minutes on 2 cores
def test_the_elephas_tests_pass_in_elephas_environment():
    python = env.python()
    spark_python = {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    done = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "test/elephas_engine"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, **spark_python, "PYTHONPATH": ""})
    tail = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", done.stdout))
    assert counts == {"passed": 12}, tail  # test/elephas_engine's 12 tests, none skipped
