"""``--fresh``: what a run that starts over forgets in its model folder."""
from __future__ import annotations

from waveforms.model import checkpoint
from waveforms.storage import OutputDir
from waveforms.train.metrics_log import METRICS, TENSORBOARD
from waveforms.train.previews import DIR as PREVIEWS


def start_fresh(out: OutputDir) -> None:
    """Remove the checkpoints, ``metrics.jsonl``, TensorBoard logs and previews of the model folder ``out``,
    in its working copy and at its target (local or ``s3://``)."""
    checkpoint.clear(out)
    out.remove(METRICS, TENSORBOARD, PREVIEWS)
