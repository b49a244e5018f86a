"""The training recipe's parts that need no Keras: the global batch and its learning rate, and the
initialisation from the data.

The learning-rate schedules, which are Keras objects, are in :mod:`waveforms.train.schedules`; this module
loads no TensorFlow, so the all-reduce driver can read the batch rules without it.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from waveforms.config import TrainConfig
from waveforms.runtime.errors import UserError

log = logging.getLogger(__name__)

LOGIT_FREQ_SAMPLES = 4_000_000  # training codes read to estimate the code frequencies


def global_batch(cfg: TrainConfig, workers: int) -> int:
    """Windows per optimizer step for ``workers`` ranks: ``batch_size``, or ``batch_per_worker`` × workers.

    Raises a :class:`~waveforms.runtime.errors.UserError` when ``batch_size`` does not split evenly among the ranks.
    """
    if cfg.batch_per_worker > 0:
        return cfg.batch_per_worker * workers
    if cfg.batch_size % workers:
        raise UserError(f"batch_size = {cfg.batch_size} does not split among {workers} workers; "
                        f"use a multiple of {workers}, or set batch_per_worker to grow the batch with the workers")
    return cfg.batch_size


def scaled_learning_rate(cfg: TrainConfig, batch: int) -> float:
    """The peak learning rate for a global batch of ``batch`` windows by the ``lr_scaling`` rule.

    ``learning_rate`` is the rate for ``batch_size`` windows; ``linear`` multiplies
    it by ``batch / batch_size``, ``sqrt`` by the square root of that, ``none`` keeps it.
    """
    ratio = batch / cfg.batch_size
    factor = {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[cfg.lr_scaling]
    return cfg.learning_rate * factor


def code_log_frequencies(setup, max_samples: int = LOGIT_FREQ_SAMPLES) -> np.ndarray:
    """Log of each code's frequency in (the first ``max_samples`` of) the training regions, add-one smoothed."""
    q = setup.wavenet.config.classes
    counts = np.ones(q, dtype=np.float64)
    left = max_samples
    for r in setup.train_regions:
        if left <= 0:
            break
        n = min(r.size, left)
        codes = setup.ds.read_window(r.track, r.start, n)
        counts += np.bincount(codes, minlength=q)[:q]
        left -= n
    freq = counts / counts.sum()
    return np.log(freq)


def initialise(setup, how: str) -> dict[str, Any]:
    """Re-initialise the (untrained) WaveNet of ``setup`` in place; returns a note for the logs.

    ``data``: residual and skip 1x1 kernels scaled by 1/sqrt(layers), so the
    residual stream and the sum of skips start at the scale of one layer, and
    the logits bias set to the log-frequency of each code in the training data
    (minus its mean), so the first predictions are the codes' marginal
    distribution instead of a uniform one. ``keras``: Keras's defaults, untouched.
    """
    if how == "keras":
        return {"init": "keras"}
    from waveforms.model.spec import spec

    model, config = setup.wavenet.keras_model, setup.wavenet.config
    sp = spec(config)
    scale = 1.0 / math.sqrt(len(sp.residuals))
    for res in sp.residuals:
        for w in (res.skip, res.residual):
            if w is not None:
                kernel = model.get_layer(w.name).kernel
                kernel.assign(kernel.numpy() * scale)
    logfreq = code_log_frequencies(setup)
    bias = model.get_layer(sp.logits.name).bias
    bias.assign((logfreq - logfreq.mean()).astype(bias.dtype))
    entropy = float(-(np.exp(logfreq) * logfreq).sum())
    log.info("init: residual and skip 1x1s scaled by %.3f; logits bias = code log-frequencies "
             "(marginal entropy %.3f nats)", scale, entropy)
    return {"init": "data", "marginal_entropy": entropy}
