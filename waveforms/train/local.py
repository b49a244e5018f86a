"""The local engine: the training loop (:mod:`waveforms.train.loop`) in this process, Keras ``train_on_batch``."""
from __future__ import annotations

from typing import Any

from waveforms.config import TrainConfig
from waveforms.storage import OutputDir
from waveforms.train import loop
from waveforms.train.common import mean_loss
from waveforms.train.loop import seed_everything, start_ema, start_state

__all__ = ["train", "seed_everything", "start_state", "start_ema", "mean_loss"]


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) and write the artifact (local or s3://); returns the training summary."""
    with OutputDir(cfg.model_dir) as out:
        # validation through this module's name, so that it can be replaced in one place
        return loop.run(cfg, out, evaluate=lambda model, batches: mean_loss(model, batches))
