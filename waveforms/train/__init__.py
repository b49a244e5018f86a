"""The train stage: random windows from a transformed dataset into a WaveNet artifact.

``--engine local`` trains in this process and ``--engine allreduce`` in N
processes of a Spark barrier stage (gradients all-reduced every step), through
one training loop with resumable checkpoints; ``--engine elephas`` trains with
elephas's parameter averaging on Spark, in elephas's own environment
(:mod:`waveforms.train.elephas.env`). All write the same artifact
(model.keras, model.json), metrics.jsonl, TensorBoard logs and loss.png.
"""
from __future__ import annotations

from waveforms.config import TrainConfig
from waveforms.storage import s3retry


def run(cfg: TrainConfig) -> int:
    """Train as configured (``cfg`` as :func:`waveforms.config.load` checked it); returns the exit code
    (``evaluate_at_end`` is :func:`waveforms.pipeline.train`'s)."""
    if cfg.engine == "elephas":  # each engine loads TensorFlow (and elephas or Spark): only the one that runs
        from waveforms.train.elephas import env as elephas_env

        if elephas_env.here():
            from waveforms.train.elephas.engine import train
        else:  # elephas's pins keep it in an environment of its own
            train = elephas_env.train_there
    elif cfg.engine == "allreduce":
        from waveforms.train.allreduce import train
    else:
        from waveforms.train.loop import train
    with s3retry.bounded(cfg.s3_outage_s):  # how long the feed, checkpoints and uploads ride out an S3 outage
        train(cfg)
    return 0


__all__ = ["run"]
