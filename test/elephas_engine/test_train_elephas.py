"""elephas on Spark local[2]: each mode learns, the artifact loads and generates, the parameter server stops."""
import json
import multiprocessing
import socket
import threading

import numpy as np
import pytest
from py4j.protocol import Py4JJavaError

from helpers.train import tone_dataset
from waveforms.config import ElephasConfig, TrainConfig
from waveforms.model import load
from waveforms.model.sampling import generate
from waveforms.train import run
from waveforms.train.elephas import engine


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tone_dataset(tmp_path_factory.mktemp("elephas") / "ds")


ELEPHAS_KEYS = set(ElephasConfig.__dataclass_fields__)


def cfg_for(data, model_dir, **kw):
    """A TrainConfig; keys of ElephasConfig (mode, workers, ...) go to its ``elephas`` section."""
    base = dict(data=str(data), model_dir=str(model_dir), preset="tiny", engine="elephas", master="local[2]",
                workers=2, epochs=3, batch_size=4, window=64, windows_per_worker=32, learning_rate=0.01, seed=2,
                clip_norm=1.0)  # asynchronous updates with lr 0.01 need the tighter clip to learn reliably
    kw = {**base, **kw}
    elephas = ElephasConfig(**{k: kw.pop(k) for k in list(kw) if k in ELEPHAS_KEYS})
    return TrainConfig(**kw, elephas=elephas)


def rows(model_dir):
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # elephas training on Spark with a parameter server: a minute or two each on 2 cores
@pytest.mark.parametrize("mode,server,frequency", [("synchronous", "http", "epoch"), ("asynchronous", "http", "epoch"),
                                                   ("hogwild", "socket", "batch")])
def test_each_mode_learns_and_writes_a_loadable_artifact(spark, data, tmp_path, monkeypatch, mode, server, frequency):
    out = tmp_path / "model"
    offsets = []
    real = engine.make_spark_model

    def recording(model, cfg, port, schedule_offset=0):
        offsets.append(schedule_offset)
        return real(model, cfg, port, schedule_offset)

    monkeypatch.setattr(engine, "make_spark_model", recording)
    assert run(cfg_for(data, out, mode=mode, parameter_server=server, frequency=frequency,
                       lr_schedule="cosine")) == 0
    assert offsets == [0, 8, 16]  # each epoch's workers resume the schedule after 32 / 4 updates per epoch
    epochs = rows(out)
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3]
    assert epochs[0]["val_loss"] > 5.0  # untrained: about ln 256
    assert epochs[-1]["val_loss"] < 0.7 * epochs[0]["val_loss"]
    assert epochs[-1]["loss"] < 0.7 * epochs[0]["loss"]
    assert all(r["samples_per_s"] > 0 for r in epochs[1:])
    wavenet = load(out)
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["engine"] == "elephas" and meta["training"]["mode"] == mode
    assert meta["sample_rate"] == 8000 and meta["dataset_id"] == "test-ds"
    assert (out / "loss.png").exists()
    codes = generate(wavenet, 40, seed=0, temperature=0)
    assert codes.shape == (1, 40) and codes.dtype == np.uint8
    assert no_parameter_server_left()


def no_parameter_server_left() -> bool:
    """No child process and no thread left but the feed's own: the process-wide ranged-read pool
    (``storage.RangeReader``, kept for the life of the process by design) is not a server."""
    threads = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
               and not t.name.startswith("range-read")]
    return not multiprocessing.active_children() and not threads


def nothing_listens(port: int) -> bool:
    """No server holds ``port``: a connection is refused, and a bind with SO_REUSEADDR succeeds.

    A plain bind() right after a run can fail while the run's closed connections sit
    in TIME_WAIT, with no process holding the port: that is not a leftover server.
    """
    host = engine.parameter_server_host()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            pass
        else:
            return False  # something still listens
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False  # bound by a socket that does not listen
    return True


@pytest.mark.slow
@pytest.mark.parametrize("server", ["http", "socket"])
def test_a_failing_task_leaves_no_parameter_server_and_the_next_run_works(spark, data, tmp_path, monkeypatch,
                                                                           server):
    port = engine.free_port("127.0.0.1")
    real = engine.window_rdd

    def failing_rdd(sc, cfg, rf, epoch):
        def boom(pair):
            raise RuntimeError("injected task failure")

        return real(sc, cfg, rf, epoch).map(boom)

    monkeypatch.setattr(engine, "window_rdd", failing_rdd)
    with pytest.raises(Py4JJavaError, match="RuntimeError: injected task failure"):
        run(cfg_for(data, tmp_path / "failed", mode="asynchronous", parameter_server=server, port=port, epochs=1))
    assert nothing_listens(port)
    assert no_parameter_server_left()
    assert not (tmp_path / "failed" / "model.keras").exists()
    monkeypatch.setattr(engine, "window_rdd", real)
    out = tmp_path / "again"
    assert run(cfg_for(data, out, mode="asynchronous", parameter_server=server, port=port, epochs=1)) == 0
    training = load(out).meta["training"]
    assert (training["engine"], training["mode"]) == ("elephas", "asynchronous")
    assert [r["epoch"] for r in rows(out)] == [0, 1]  # the untrained model's losses, then the one epoch
    assert nothing_listens(port) and no_parameter_server_left()


def test_windows_are_made_on_the_executors_from_descriptors(spark, data):
    cfg = cfg_for(data, "unused")
    sc = spark.sparkContext
    rdd = engine.window_rdd(sc, cfg, 17, epoch=1)
    # the driver ships (partition, epoch) pairs only; the executors return windows read from the dataset
    assert rdd.getNumPartitions() == 2
    pairs = rdd.collect()
    assert len(pairs) == 2 * cfg.elephas.windows_per_worker
    x, y = pairs[0]
    assert x.shape == (17 + 64 - 1,) and y.shape == (64,)
    np.testing.assert_array_equal(x[17:], y[:-1])  # the target is the input shifted by one sample


def test_bad_mode_is_a_clear_error(data, tmp_path):
    """Refused where the config is loaded, the one place it is checked."""
    from waveforms.config import ConfigError, load

    with pytest.raises(ConfigError, match=r"elephas.mode = 'fast' is not allowed; one of synchronous, asynchronous, hogwild"):
        load("train", sets=[f"data={data}", f"model_dir={tmp_path / 'm'}", "engine=elephas", "elephas.mode=fast"])
