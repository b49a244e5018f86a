"""Bits per sample on the whole validation split (``val_split_bits_per_sample`` in evaluation.json).

Training's ``val_probe_bits_per_sample`` is another number: the loss on a few fixed
validation batches (:mod:`waveforms.train.loop`); this one counts every target of
the split, cut the same way for every model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from waveforms.dataset import Dataset, Region, regions
from waveforms.runtime.progress import bits

VAL_BITS = "val_split_bits_per_sample"


@dataclass(frozen=True)
class ValWindow:
    """Codes ``[start, start + length)`` of a track region; targets at window index >= ``first``."""

    track: dict[str, Any]
    start: int
    length: int
    first: int
    genre: int = 0


def region_windows(regs: list[Region], window: int, receptive_field: int) -> list[ValWindow]:
    """Deterministic windows over regions (sorted by track id).

    A region of n samples is cut into consecutive chunks of ``window`` samples
    (the same cut for every model). Chunk k counts the targets from
    ``k * window + receptive_field`` to its end: their receptive field lies
    inside the chunk. A shorter last chunk is read right-aligned as a full
    window (context from the chunk before), counting the same positions.
    """
    out: list[ValWindow] = []
    for r in sorted(regs, key=lambda r: (str(r.track["id"]), r.start)):
        for c in range(r.start, r.end, window):
            first_abs = c + receptive_field
            end = min(c + window, r.end)
            if first_abs >= end:
                continue
            start = min(c, r.end - window)
            out.append(ValWindow(r.track, start, window, first_abs - start, r.genre))
    return out


def val_windows(ds: Dataset, window: int, receptive_field: int, genres: list[str] | None = None) -> list[ValWindow]:
    """The whole validation split, cut by :func:`region_windows`."""
    return region_windows(regions(ds, window, genres)[1], window, receptive_field)


def window_nll(wavenet, codes: np.ndarray, first: np.ndarray, genre: np.ndarray | None = None) -> tuple[float, int]:
    """Summed NLL (nats) and target count of windows ``codes`` (batch, length): output t predicts t + 1,
    targets from index ``first`` (per window) on."""
    import keras

    x = codes[:, :-1].astype(np.int32)
    logits = wavenet.keras_model.predict_on_batch((x, genre.astype(np.int32)) if genre is not None else x)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    per = np.asarray(loss(codes[:, 1:].astype(np.int32), logits), dtype=np.float64)  # (batch, length - 1)
    keep = np.arange(1, codes.shape[1])[None, :] >= first[:, None]
    return float(per[keep].sum()), int(keep.sum())


def windows_nll(wavenet, ds: Dataset, wins: list[ValWindow], batch_size: int = 4) -> tuple[float, int]:
    """Summed NLL (nats) and counted targets of ``wins``, read from ``ds`` in batches."""
    conditioned = wavenet.config.num_genres > 0
    total, count = 0.0, 0
    for b in range(0, len(wins), batch_size):
        batch = wins[b:b + batch_size]
        codes = np.stack([ds.read_window(w.track, w.start, w.length) for w in batch])
        genre = np.array([w.genre for w in batch]) if conditioned else None
        s, n = window_nll(wavenet, codes, np.array([w.first for w in batch]), genre)
        total, count = total + s, count + n
    return total, count


def val_nll(wavenet, ds: Dataset, window: int, batch_size: int = 4) -> dict[str, Any]:
    """Mean NLL per counted sample over :func:`val_windows`, in nats and bits."""
    wins = val_windows(ds, window, wavenet.receptive_field, wavenet.genres or None)
    total, count = windows_nll(wavenet, ds, wins, batch_size)
    nats = total / count if count else float("nan")
    return {"val_nats": nats, VAL_BITS: bits(nats), "val_windows": len(wins),
            "val_samples": count}
