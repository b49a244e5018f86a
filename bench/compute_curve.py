"""Loss against compute: the fit ``L(C) = L_inf + a * (C / c_ref) ** -b``, its held-out error and projections.

Pure functions (numpy and scipy), used by ``bench/bench_compute_curve.py`` and
tested with points drawn from a known curve (``test/test_compute_curve.py``).
``c_ref`` is the geometric mean of the fitted points' compute, so ``a`` is the
excess loss over ``L_inf`` at the middle of the measured range and the fit is
well conditioned whatever the unit (FLOPs or core-seconds).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from waveforms.runtime.progress import bits

B_GRID = np.geomspace(0.01, 4.0, 200)  # exponents tried before the refinement
B_MAX = 10.0


@dataclass(frozen=True)
class Fit:
    l_inf: float
    a: float
    b: float
    c_ref: float
    points: int

    def loss(self, c: float | np.ndarray) -> float | np.ndarray:
        """The fitted loss at compute ``c``."""
        return self.l_inf + self.a * (np.asarray(c, dtype=float) / self.c_ref) ** -self.b

    def compute_for(self, target: float) -> float:
        """Compute at which the fitted curve reaches ``target`` (``inf`` where it never does)."""
        if target <= self.l_inf or self.a <= 0:
            return math.inf
        return self.c_ref * (self.a / (target - self.l_inf)) ** (1.0 / self.b)


def _curve(x: np.ndarray, l_inf: float, a: float, b: float) -> np.ndarray:
    return l_inf + a * x ** -b


def _linear_start(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Best (l_inf, a, b) over a grid of b, each b solved by linear least squares (l_inf >= 0, a >= 0)."""
    best, start = math.inf, (max(0.0, float(y.min()) - 0.1), float(np.ptp(y)) or 0.1, 0.5)
    for b in B_GRID:
        design = np.stack([np.ones_like(x), x ** -b], axis=1)
        (l_inf, a), *_ = np.linalg.lstsq(design, y, rcond=None)
        if l_inf < 0 or a < 0:
            continue
        sse = float(np.sum((design @ np.array([l_inf, a]) - y) ** 2))
        if sse < best:
            best, start = sse, (float(l_inf), float(a), float(b))
    return start


def fit(compute: list[float] | np.ndarray, loss: list[float] | np.ndarray) -> Fit:
    """Least-squares fit of ``L(C) = L_inf + a * (C / c_ref) ** -b`` (``L_inf >= 0``, ``a >= 0``, ``0 < b``)."""
    c, y = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    if c.shape != y.shape or c.ndim != 1:
        raise ValueError("compute and loss must be two lists of the same length")
    if len(c) < 3:
        raise ValueError(f"a fit of 3 parameters needs at least 3 points, got {len(c)}")
    if np.any(c <= 0) or not np.all(np.isfinite(c)) or not np.all(np.isfinite(y)):
        raise ValueError("compute must be positive and every value finite")
    c_ref = float(np.exp(np.mean(np.log(c))))
    x = c / c_ref
    p0 = _linear_start(x, y)
    lower, upper = [0.0, 0.0, 1e-4], [np.inf, np.inf, B_MAX]
    p0 = tuple(min(max(p, lo + 1e-9), hi) for p, lo, hi in zip(p0, lower, upper))
    try:
        with warnings.catch_warnings():  # the covariance is not used; with 3 points it cannot be estimated
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(_curve, x, y, p0=p0, bounds=(lower, upper), maxfev=20000)
    except RuntimeError:  # no convergence: the grid's start is still a least-squares answer for its b
        params = p0
    l_inf, a, b = (float(p) for p in params)
    return Fit(l_inf, a, b, c_ref, len(c))


@dataclass(frozen=True)
class HeldOut:
    """The largest-compute point, predicted by a fit to the others: ``error`` = predicted - observed (nats)."""

    compute: float
    observed: float
    predicted: float

    @property
    def error(self) -> float:
        return self.predicted - self.observed


def held_out(compute: list[float], loss: list[float]) -> HeldOut:
    """Fit without the point of the largest compute, then predict that point."""
    order = np.argsort(np.asarray(compute, dtype=float))
    c, y = np.asarray(compute, dtype=float)[order], np.asarray(loss, dtype=float)[order]
    if len(c) < 4:
        raise ValueError(f"a held-out check needs at least 4 points (3 to fit, 1 to predict), got {len(c)}")
    f = fit(c[:-1], y[:-1])
    return HeldOut(float(c[-1]), float(y[-1]), float(f.loss(c[-1])))


@dataclass(frozen=True)
class Projection:
    """Compute to reach ``target``: the fit's own answer and the range from the curve moved by ±``error``."""

    target: float
    low: float  # the curve moved down by |error| (reaches the target sooner)
    mid: float
    high: float  # moved up by |error|; inf where the moved curve never reaches the target
    measured_max: float

    @property
    def beyond(self) -> float:
        """How many times the largest measured compute the fit's answer is (below 1: inside the measured range)."""
        return self.mid / self.measured_max


def project(f: Fit, target: float, error: float, measured_max: float) -> Projection:
    """Compute to reach ``target`` nats, as a range: the target reached ``|error|`` nats sooner or later."""
    e = abs(error)
    return Projection(target, f.compute_for(target + e), f.compute_for(target), f.compute_for(target - e),
                      measured_max)


def bits_per_second(nats_per_sample: float, sample_rate: int) -> float:
    """Nats per sample as bits per second of audio."""
    return bits(nats_per_sample) * sample_rate
