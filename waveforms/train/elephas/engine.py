"""The elephas engine: data-parallel training on Spark with elephas 7.3.0.

The driver parallelises only ``(partition, epoch)`` descriptors; each executor
opens the dataset and reads its own random windows (ranged reads), so no
training data passes through the driver. Each epoch is one ``fit`` of a new
``SparkModel`` (synchronous) or ``AsynchronousSparkModel`` (asynchronous,
hogwild) around the same master network, with workers that keep their
compiled model between epochs (:mod:`waveforms.train.elephas.worker`) and a
learning-rate schedule that resumes where the run is; the parameter server
always stops, whatever happens to the tasks. The master network is saved with Keras.

Private API, kept: the two model classes replace elephas's private ``_fit`` (and read
``_master_network``), because elephas's own ``fit`` ships workers that rebuild, compile and trace the
model in every task and restart the schedule each epoch. elephas is pinned at 7.3.0 in its own
environment (``.elephas``), so these names change only with the pin; test/elephas_engine tests the
behaviour (one build per Python worker, a schedule across epochs). Measured 2026-12-06 in ``.elephas``
(``small``, a task of 16 windows of 2000 at batch 8, 4 alternating rounds, a heavily shared 2-core
machine): elephas's worker 78.3 s per task, the kept model 2.7 s (75.6 s saved, 60-156 s).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import Any, Iterator

import numpy as np

from waveforms.config import TrainConfig
from waveforms.dataset import Dataset, regions
from waveforms.dataset.cache import open_cache
from waveforms.runtime.errors import UserError
from waveforms.runtime.ports import free_port
from waveforms.runtime.progress import bits
from waveforms.storage import OutputDir
from waveforms.train.common import check_finite, compile_model, mean_loss, prepare, save_artifact
from waveforms.train.metrics_log import METRICS, TENSORBOARD, VAL_BITS, MetricsLog
from waveforms.train.windows import READS_IN_FLIGHT, WindowSampler, shared_reader, split_window

log = logging.getLogger(__name__)
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the parameter server logs every request

TRAIN_STREAM = 2  # RNG stream for executor windows: (seed, 2, epoch, partition)


def validate(cfg: TrainConfig) -> None:
    """What elephas needs beyond each key's declared range (checked by the config)."""
    if cfg.condition_on_genre:
        raise UserError("genre conditioning needs --engine local (elephas feeds single-input models)")
    if cfg.elephas.windows_per_worker <= cfg.batch_size:
        raise UserError("windows_per_worker must exceed batch_size (elephas skips smaller partitions)")


def parameter_server_host() -> str:
    """The address elephas's parameter server binds to and its clients connect to."""
    from elephas.utils.sockets import determine_master

    return determine_master(0).rsplit(":", 1)[0]


def custom_objects() -> dict[str, Any]:
    """The model's own layers, by class and registered name (pickled by reference: executors import them)."""
    from waveforms.model.wavenet import custom_objects as layers  # loads Keras: only when elephas trains

    return layers()


def partition_windows(root: str, receptive_field: int, window: int, n: int, seed: int,
                      descriptor: tuple[int, int], reads_in_flight: int = READS_IN_FLIGHT,
                      shard_cache: tuple[str, float] = ("", 0.0)) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Runs on an executor: ``n`` random training windows as ``(input, target)`` pairs, read through
    the same feed as the local engine's (``reads_in_flight`` ranged reads at once; the node's shard
    cache ``(folder, GB)`` where on)."""
    partition, epoch = descriptor
    ds = Dataset.open(root)
    train, _, _ = regions(ds, receptive_field + window)
    cache = open_cache(ds, *shard_cache)
    sampler = WindowSampler(ds, train, receptive_field, window, batch_size=n, seed=seed,
                            reader=shared_reader(reads_in_flight), cache=cache)
    try:
        w, _ = sampler.windows(np.random.default_rng([seed, TRAIN_STREAM, epoch, partition]), n)
    finally:
        if cache:
            cache.close()  # lets this task's downloads finish: the next epoch's tasks read them
    x, y = split_window(w, receptive_field)
    for xi, yi in zip(x.astype(np.int32), y.astype(np.int32)):
        yield xi, yi


def window_rdd(sc, cfg: TrainConfig, receptive_field: int, epoch: int):
    """An RDD of ``(x, y)`` windows made on the executors, one partition per worker."""
    descriptors = [(p, epoch) for p in range(cfg.workers)]
    read = functools.partial(partition_windows, cfg.data, receptive_field, cfg.window, cfg.elephas.windows_per_worker,
                             cfg.seed, reads_in_flight=cfg.reads_in_flight,
                             shard_cache=(cfg.shard_cache_dir, cfg.shard_cache_gb))
    return sc.parallelize(descriptors, cfg.workers).flatMap(read)


def stop_parameter_server(spark_model) -> None:
    """Stop elephas's parameter server if it is still up (elephas skips this when a task fails)."""
    server = getattr(spark_model, "parameter_server", None)
    if server is None:
        return
    proc = getattr(server, "server", None)  # HttpServer: a multiprocessing.Process
    if proc is not None:
        with contextlib.suppress(ValueError):  # already closed by elephas after a successful fit
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join(10)
        return
    if getattr(server, "thread", None) is not None:  # SocketServer: a thread
        server.stop()


class CachingSparkModel:
    """Mixin for elephas's models: workers from :mod:`waveforms.train.elephas.worker`, which keep
    their compiled model between epochs; the master network is not recompiled (its traced
    validation function stays valid); and the optimizer shipped to the workers has its schedule
    offset by ``schedule_offset`` updates (the updates each worker has made in earlier epochs)."""

    schedule_offset = 0

    def _worker_args(self):
        from waveforms.train.elephas.worker import shifted_optimizer_config

        optimizer = shifted_optimizer_config(self.master_optimizer, self.schedule_offset)
        inner = getattr(self.master_optimizer, "inner_optimizer", self.master_optimizer)
        schedule = type(getattr(inner, "_learning_rate", None))  # pickled by reference: workers import its module
        custom = {**self.custom_objects, schedule.__name__: schedule}
        return self._master_network.to_json(), optimizer, self.master_loss, self.master_metrics, custom


def _synchronous_fit(self, rdd, **kwargs):
    from elephas.utils import average_and_subtract

    from waveforms.train.elephas.worker import CachedSparkWorker

    model_json, optimizer, loss, metrics, custom = self._worker_args()
    epochs = kwargs.get("epochs", 1)
    train_config = {**kwargs, "epochs": 1}
    parameters = rdd.context.broadcast(self._master_network.get_weights())
    try:
        for _ in range(epochs):
            worker = CachedSparkWorker(model_json, parameters, train_config, optimizer, loss, metrics, custom)
            outcomes = rdd.mapPartitions(worker.train).collect()
            self.training_histories.extend(history for _, history in outcomes)
            new = average_and_subtract(parameters.value, [deltas for deltas, _ in outcomes])
            parameters.destroy()
            parameters = rdd.context.broadcast(new)
        self._master_network.set_weights(parameters.value)
    finally:
        parameters.destroy()


def _asynchronous_fit(self, rdd, **kwargs):
    from waveforms.train.elephas.worker import CachedAsynchronousSparkWorker

    model_json, optimizer, loss, metrics, custom = self._worker_args()
    with self.run_parameter_server():
        parameters = rdd.context.broadcast(self._master_network.get_weights())
        try:
            worker = CachedAsynchronousSparkWorker(model_json, parameters, self.client, dict(kwargs), self.frequency,
                                                   optimizer, loss, metrics, custom)
            rdd.mapPartitions(worker.train).collect()
            self._master_network.set_weights(self.client.get_parameters())
        finally:
            parameters.destroy()


def make_spark_model(model, cfg: TrainConfig, port: int, schedule_offset: int = 0):
    from elephas.spark_model import AsynchronousSparkModel, SparkModel

    class SynchronousModel(CachingSparkModel, SparkModel):
        _fit = _synchronous_fit

    class AsynchronousModel(CachingSparkModel, AsynchronousSparkModel):
        _fit = _asynchronous_fit

    common = dict(custom_objects=custom_objects(), batch_size=cfg.batch_size)
    if cfg.elephas.mode == "synchronous":
        spark_model = SynchronousModel(model, **common)
    else:
        spark_model = AsynchronousModel(model, mode=cfg.elephas.mode, frequency=cfg.elephas.frequency,
                                        parameter_server_mode=cfg.elephas.parameter_server, port=port, **common)
    spark_model.schedule_offset = schedule_offset
    return spark_model


def fit_epoch(model, rdd, cfg: TrainConfig, port: int, schedule_offset: int = 0) -> list[dict[str, Any]]:
    """One elephas fit over ``rdd``; the parameter server is stopped however it ends. Returns histories.

    ``schedule_offset``: the updates each worker made in earlier epochs (where its schedule resumes).
    """
    spark_model = make_spark_model(model, cfg, port, schedule_offset)
    try:
        spark_model.fit(rdd, epochs=1, batch_size=cfg.batch_size, verbose=0)
    finally:
        stop_parameter_server(spark_model)
    return [h for h in spark_model.training_histories if h]


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train with elephas for ``elephas.epochs`` epochs and write the artifact (local or s3://); returns the summary."""
    with OutputDir(cfg.model_dir) as out:
        return _train(cfg, out)


def _train(cfg: TrainConfig, out: OutputDir) -> dict[str, Any]:
    import keras

    from waveforms.runtime.spark import stage_context  # imports pyspark

    validate(cfg)
    keras.utils.set_random_seed(cfg.seed)
    setup = prepare(cfg)
    rf = setup.receptive_field
    worker_steps = -(-cfg.elephas.windows_per_worker // cfg.batch_size)  # one worker's updates per epoch
    updates = cfg.elephas.epochs * worker_steps  # the schedule spans the whole run
    model = compile_model(setup.wavenet.training_model(), cfg, total_steps=updates)
    out.remove(METRICS, TENSORBOARD)  # elephas runs always start over
    metrics = MetricsLog(out)
    sampler = functools.partial(WindowSampler, setup.ds, receptive_field=rf, window=cfg.window,
                                batch_size=cfg.batch_size, seed=cfg.seed)
    train_probe = sampler(setup.train_regions).fixed_batches(cfg.val_batches)
    val_batches = sampler(setup.val_regions).fixed_batches(cfg.val_batches) if setup.val_regions else []
    host = parameter_server_host()
    port = cfg.elephas.port or free_port(host)
    if cfg.elephas.mode != "synchronous":
        log.info("parameter server (%s) on %s:%d", cfg.elephas.parameter_server, host, port)
    sc = stage_context(cfg.master, "waveforms-train")
    steps_per_epoch = cfg.workers * -(-cfg.elephas.windows_per_worker // cfg.batch_size)
    samples_per_epoch = cfg.workers * cfg.elephas.windows_per_worker * cfg.window

    def record(epoch: int, loss: float, seconds: float | None, wall: float) -> dict[str, Any]:
        row: dict[str, Any] = {"step": epoch * steps_per_epoch, "epoch": epoch, "loss": loss, "wall_time": wall}
        if seconds:
            row["samples_per_s"] = samples_per_epoch / seconds
        if val_batches:
            row["val_loss"] = mean_loss(model, val_batches)
            row[VAL_BITS] = bits(row["val_loss"])
        metrics.append(row)
        log.info("epoch %d/%d %s", epoch, cfg.elephas.epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("step", "epoch")))
        return row

    t0 = time.perf_counter()
    row = record(0, mean_loss(model, train_probe), None, 0.0)
    epochs_done = 0
    try:
        for epoch in range(1, cfg.elephas.epochs + 1):
            t = time.perf_counter()
            histories = fit_epoch(model, window_rdd(sc, cfg, rf, epoch), cfg, port, (epoch - 1) * worker_steps)
            seconds = time.perf_counter() - t
            worker_losses = [h["loss"][-1] for h in histories if h.get("loss")]
            loss = float(np.mean(worker_losses)) if worker_losses else mean_loss(model, train_probe)
            check_finite(loss, epoch * steps_per_epoch)
            row = record(epoch, loss, seconds, time.perf_counter() - t0)
            epochs_done = epoch
            if cfg.max_minutes > 0 and time.perf_counter() - t0 >= cfg.max_minutes * 60 and epoch < cfg.elephas.epochs:
                log.info("stopping after epoch %d: the %.1f-minute budget is spent", epoch, cfg.max_minutes)
                break
    finally:
        metrics.close()
    summary = {
        "engine": "elephas",
        "mode": cfg.elephas.mode,
        "frequency": cfg.elephas.frequency,
        "parameter_server": cfg.elephas.parameter_server,
        "master": cfg.master,
        "workers": cfg.workers,
        "epochs": epochs_done,
        "steps": epochs_done * steps_per_epoch,
        "final_loss": row["loss"],
        "final_val_loss": row.get("val_loss"),
        "batch_size": cfg.batch_size,
        "window": cfg.window,
        "seed": cfg.seed,
        "wall_time_s": time.perf_counter() - t0,
        "validation": setup.notes["validation"],
    }
    save_artifact(setup, model, summary, metrics)
    log.info("model written to %s (loss %.4f after %d epochs)", cfg.model_dir, row["loss"], epochs_done)
    return summary
