"""The training progress a person reads: the total steps, the time left and one line per logged row."""
from __future__ import annotations

from typing import Any

from waveforms.runtime.progress import clock, human


def total_steps(steps: int, max_minutes: float, fitted: int | None) -> int | None:
    """The steps this run will take: the budget's fitted schedule, ``steps``, or None while a budget is unfitted."""
    if fitted:
        return min(int(fitted), steps)
    return None if max_minutes > 0 else steps


def time_left(step: int, total: int | None, wall_s: float, max_minutes: float, s_per_step: float | None) -> str:
    """"4:00 budget, 1:03 left" on a budget; "1:03 left" at the recent pace; "" while unknown."""
    if max_minutes > 0:
        return f"{clock(max_minutes * 60)} budget, {clock(max_minutes * 60 - wall_s)} left"
    if total and s_per_step:
        return f"{clock((total - step) * s_per_step)} left"
    return ""


def line(row: dict[str, Any], total: int | None, left: str) -> str:
    """One logged row: step 300/1,517 · loss 3.21 · val 3.30 · lr 0.00198 · 86k samples/s · 1:03 left."""
    return " · ".join([f"step {row['step']}" + (f"/{total:,}" if total else ""), *fields(row)] + ([left] if left else []))


def fields(row: dict[str, Any]) -> list[str]:
    """A metrics row's figures in a reader's units (its step aside)."""
    parts = []
    if "loss" in row:
        parts.append(f"loss {row['loss']:.3f}")
    if "val_loss" in row:
        parts.append(f"val {row['val_loss']:.3f}")
    if "lr" in row:
        parts.append(f"lr {row['lr']:.3g}")
    if "samples_per_s" in row:
        parts.append(f"{human(row['samples_per_s'])} samples/s")
    if "preview" in row:
        parts.append(f"preview {row['preview']}")
    return parts
