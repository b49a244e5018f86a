"""The log of a training run: ``metrics.jsonl``, TensorBoard scalars and the ``loss.png`` plot.

All three are written in the model folder's local working copy
(:class:`waveforms.storage.OutputDir`) and uploaded whole after each write, since
an S3 object cannot be appended to. A row's ``val_probe_bits_per_sample`` is the
validation loss on the run's few fixed probe batches, in bits; older rows call it
``val_bits_per_sample`` and are read under the new name (:func:`upgraded`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any

from waveforms import storage
from waveforms.runtime.errors import disk_full, free_space, is_disk_full
from waveforms.storage import OutputDir, jsonl, versions

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
PLOT = "loss.png"
TENSORBOARD = "tensorboard"
VAL_BITS = "val_probe_bits_per_sample"
RENAMED = {"val_bits_per_sample": VAL_BITS}


def upgraded(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row under today's key names."""
    return versions.renamed(row, RENAMED)


class MetricsLog:
    """Appends one JSON object per log interval; mirrors scalars to TensorBoard.

    ``model_dir`` is an :class:`OutputDir` (its owner closes it) or a location,
    which this log opens and closes itself.
    """

    def __init__(self, model_dir: str | Path | OutputDir, tensorboard: bool = True):
        self._owns = not isinstance(model_dir, OutputDir)
        self.out = OutputDir(model_dir) if self._owns else model_dir
        self.dir = self.out.local
        self.path = self.dir / METRICS
        self._writer = None
        if tensorboard:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(str(self.dir / TENSORBOARD))

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = jsonl.parse(self.path.read_text(), str(self.path))  # drops a line torn by a kill
        return [upgraded(r) for r in rows]

    def truncate(self, step: int) -> None:
        """Drop rows after ``step`` (they are recomputed when training resumes there); the rest keep
        today's key names."""
        storage.write_text(str(self.path), jsonl.dumps(r for r in self.rows() if r.get("step", 0) <= step))

    def append(self, row: dict[str, Any]) -> None:
        """Add ``row`` to metrics.jsonl and TensorBoard; on a full disk, a :class:`~waveforms.runtime.errors.DiskFullError`
        and metrics.jsonl as it was (no torn row)."""
        size = self.path.stat().st_size if self.path.exists() else 0
        with disk_full(self.path):
            try:
                jsonl.append(self.path, row)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.truncate(self.path, size)
                raise
        if self._writer is not None:
            import tensorflow as tf

            with disk_full(self.dir / TENSORBOARD, "writing the TensorBoard log in"):
                with self._writer.as_default():
                    for key, value in row.items():
                        if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                            tf.summary.scalar(key, value, step=int(row["step"]))
                self._writer.flush()
        self.out.upload(METRICS, TENSORBOARD)

    def audio(self, tag: str, samples, sample_rate: int, step: int) -> None:
        """A TensorBoard audio summary of float samples in [-1, 1] (mono)."""
        if self._writer is None:
            return
        import numpy as np
        import tensorflow as tf

        clip = np.asarray(samples, dtype=np.float32).reshape(1, -1, 1)
        with disk_full(self.dir / TENSORBOARD, "writing the TensorBoard log in"):
            with self._writer.as_default():
                tf.summary.audio(tag, clip, sample_rate, step=int(step), max_outputs=1)
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard log (a full disk is a warning here: the run has stopped or ended, and
        metrics.jsonl holds the same numbers)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                log.warning("the TensorBoard log in %s misses its last events: the disk is full (%s)",
                            self.dir / TENSORBOARD, free_space(self.dir))
            self.out.upload(TENSORBOARD)
        if self._owns:
            self.out.close()

    def plot(self, title: str = "") -> Path:
        """Write ``loss.png``: training and validation loss (nats) against step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        fig, ax = plt.subplots(figsize=(7, 4))
        train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
        val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
        if train:
            ax.plot(*zip(*train), label="train loss")
        if val:
            ax.plot(*zip(*val), "o-", label="validation loss")
        ax.axhline(math.log(256), color="grey", linestyle=":", label="ln 256 (uniform)")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats per sample)")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        out = self.dir / PLOT
        with storage.atomic_local(out) as fh:
            fig.savefig(fh, format="png", dpi=100)
        plt.close(fig)
        self.out.upload(PLOT)
        return out
