"""The match threshold of an index, measured on its dataset: cross-track neighbours, negative controls
and re-encoded copies of training excerpts.

A second of audio is called a copy when its nearest training window reaches
the threshold. The threshold lies above the ``PERCENTILE``-th percentile of
windows' similarity to their nearest window of a *different* track and above
every negative control's best second (:mod:`waveforms.evaluate.controls`); it is
the midpoint between that ceiling and the lowest similarity of the copies'
seconds. The margin (lowest copy minus highest control) is recorded with it.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from waveforms.evaluate import controls
from waveforms.evaluate.match import Matcher

log = logging.getLogger(__name__)

PERCENTILE = 99.9
OFFSET_TOLERANCE_S = 0.5


def cross_track(vectors: np.ndarray, tracks: np.ndarray, max_windows: int, seed: int = 0) -> tuple[float, int]:
    """On at most ``max_windows`` sampled windows, each one's similarity to its nearest window of a
    different track: the ``PERCENTILE``-th percentile, and the number of windows it was measured on."""
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(vectors))[:max_windows]
    v, t = vectors[pick], tracks[pick]
    sims = v @ v.T
    sims[t[:, None] == t[None, :]] = -np.inf
    nearest = sims.max(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    if nearest.size == 0:
        return 0.0, 0
    return float(np.percentile(nearest, PERCENTILE)), int(nearest.size)


def copy_start(n_samples: int, sample_rate: int, hop: int) -> int | None:
    """Where a copy excerpt begins: the grid point nearest the middle of the track plus ``shift_s``."""
    length = int(round((controls.COPY["seconds"] + controls.COPY["shift_s"]) * sample_rate))
    if n_samples < length:
        return None
    return (n_samples - length) // 2 // hop * hop + int(round(controls.COPY["shift_s"] * sample_rate))


def measure_copies(matcher: Matcher, track_of: np.ndarray, tracks: list[tuple[int, dict[str, Any]]],
                   read: Callable[[dict[str, Any], int, int], np.ndarray], mu: int) -> list[dict[str, Any]]:
    """Each second of each track's copy: similarity, and whether it was found at its track and offset."""
    sr = matcher.spec.sample_rate
    rows = []
    for pos, t in tracks:
        start = copy_start(int(t["num_samples"]), sr, matcher.spec.hop)
        if start is None:
            continue
        codes = controls.mp3_copy(read(t, start, int(round(controls.COPY["seconds"] * sr))), sr, mu)
        for m in matcher.seconds(codes, mu):
            expected = start / sr + m.second
            found = m.label >= 0 and int(track_of[m.label]) == pos and abs(m.offset_s - expected) <= OFFSET_TOLERANCE_S
            rows.append({"track": pos, "second": m.second, "similarity": m.similarity, "found": bool(found)})
    return rows


def measure_controls(matcher: Matcher, clips: dict[str, np.ndarray], mu: int) -> dict[str, float]:
    """Each negative control's highest similarity over its seconds (0.0: nothing to compare)."""
    out = {}
    for name, codes in clips.items():
        sims = [m.similarity for m in matcher.seconds(codes, mu) if m.label >= 0]
        out[name] = round(float(max(sims)) if sims else 0.0, 6)
    return out


def threshold(ceiling: float, copy_min: float | None) -> float:
    """Midway between what is no copy (``ceiling``) and the lowest copy; just above the ceiling when the
    copies do not clear it (then no control is flagged and some copies are missed)."""
    if copy_min is not None and copy_min > ceiling:
        return (ceiling + copy_min) / 2
    return min(1.0, ceiling + 1e-3)


def calibrate(matcher: Matcher, track_of: np.ndarray, sample: np.ndarray, sample_tracks: np.ndarray,
              tracks: list[tuple[int, dict[str, Any]]], read, mu: int, calibration_windows: int,
              copy_tracks: int, untrained: bool = True) -> dict[str, Any]:
    """The ``threshold`` and the ``calibration`` record of index.json."""
    cross, n_cross = cross_track(sample, sample_tracks, calibration_windows)
    pick = np.unique(np.linspace(0, len(tracks) - 1, min(copy_tracks, len(tracks))).round().astype(int)) \
        if copy_tracks and tracks else np.zeros(0, int)
    copies = measure_copies(matcher, track_of, [tracks[i] for i in pick], read, mu)
    negative = measure_controls(matcher, controls.negative_controls(matcher.spec.sample_rate, mu,
                                                                   untrained=untrained), mu)
    neg_max = max(negative.values())
    copy_min = min((c["similarity"] for c in copies), default=None)
    ceiling = max(cross, neg_max)
    thr = threshold(ceiling, copy_min)
    if copy_min is None or copy_min <= ceiling:
        log.warning("re-encoded copies (lowest %s) do not clear the negative controls and other tracks (%.4f): "
                    "the threshold %.4f flags no control but misses some copies", copy_min, ceiling, thr)
    record = {
        "cross_track_percentile": PERCENTILE, "cross_track": round(cross, 6), "cross_track_windows": n_cross,
        "negative": negative, "negative_max": round(neg_max, 6),
        "copy": dict(controls.COPY), "copy_seconds": len(copies),
        "copies_found": sum(c["found"] for c in copies),
        "copy_min": None if copy_min is None else round(copy_min, 6),
        "margin": None if copy_min is None else round(copy_min - neg_max, 6),
    }
    return {"threshold": round(thr, 6), "threshold_percentile": PERCENTILE, "calibration_windows": n_cross,
            "calibration": record}


def summary(calib: dict[str, Any]) -> str:
    """:func:`calibrate`'s result in one line a person reads (index.json holds the whole record)."""
    rec = calib["calibration"]
    worst = f" ({max(rec['negative'], key=rec['negative'].get)})" if rec["negative"] else ""
    copies = (f"{rec['copies_found']} of {rec['copy_seconds']} copy seconds found, lowest {rec['copy_min']:.4f}, "
              f"margin {rec['margin']:.4f}" if rec["copy_min"] is not None else "no copies measured")
    return (f"threshold {calib['threshold']:.4f}: cross-track p{rec['cross_track_percentile']:g} "
            f"{rec['cross_track']:.4f} ({rec['cross_track_windows']:,} windows), highest negative control "
            f"{rec['negative_max']:.4f}{worst}; {copies}")
