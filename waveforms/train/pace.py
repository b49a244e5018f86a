"""A budget run's pace and its schedule's length: measured over recent steps, refitted when the pace moves.

A ``max_minutes`` budget with a cosine schedule decays the learning rate over
the steps the budget is expected to hold. The machine's pace moves (a shared
machine, validation, previews), so the loop measures it over a window of recent
logged intervals (wall time per step, validation and previews included) and
refits the schedule whenever the steps it now expects differ from the fitted
length by enough to matter (:func:`refit`). Intervals holding a one-off cost
(the first steps, with the step's trace; the first validation or preview,
which compile) are not the pace and are left out. A refit changes a variable
the traced step reads (:meth:`waveforms.train.schedules.ShiftedSchedule.fit_to`):
no retrace (one of ``small``'s took 7-10 s on the shared 2-core machine).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from waveforms.config import TrainConfig

FIT_AT = 0.1  # share of the budget after which the schedule is first fitted
MARGIN = 0.97  # of the steps the budget's remaining time is expected to hold
WINDOW = 0.1  # the pace is measured over about this share of the budget (the newest intervals)
REFIT_SHARE = 0.05  # refit when the expected steps left move by more than this share of those fitted ...
REFIT_MIN = 0.01  # ... and by more than this share of the fitted length


@dataclass
class Pace:
    """Wall seconds per step over the newest logged intervals that hold no one-off cost."""

    window_s: float
    intervals: deque = field(default_factory=deque)  # (steps, seconds), oldest first

    def add(self, steps: int, seconds: float, one_off: bool = False) -> None:
        """An interval of ``steps`` steps that took ``seconds`` (everything between two rows)."""
        if one_off or steps <= 0:
            return
        self.intervals.append((steps, seconds))
        while len(self.intervals) > 1 and sum(s for _, s in list(self.intervals)[1:]) >= self.window_s:
            self.intervals.popleft()

    def seconds_per_step(self) -> float | None:
        """The pace over the window; None before any clean interval."""
        steps = sum(n for n, _ in self.intervals)
        return sum(s for _, s in self.intervals) / steps if steps else None


def expected_steps(cfg: TrainConfig, step: int, wall_s: float, s_per_step: float) -> int:
    """The length a schedule should have to end its decay near the budget's last step, at ``s_per_step``."""
    left = MARGIN * (cfg.max_minutes * 60 - wall_s) / s_per_step
    return max(step + 1, min(cfg.steps, int(step + left)))


def refit(cfg: TrainConfig, step: int, wall_s: float, s_per_step: float | None, fitted: int | None) -> int | None:
    """The schedule length to use now, or None to keep ``fitted`` (None: not fitted yet).

    None until it applies and can be told: a cosine schedule, a budget, past
    the warmup, past :data:`FIT_AT` of the budget and with a measured pace.
    Then the first fit, and later a refit when the steps expected from ``step``
    on differ from those ``fitted`` leaves by more than :data:`REFIT_SHARE` of
    them and :data:`REFIT_MIN` of ``fitted``.
    """
    budget = cfg.max_minutes * 60
    if (cfg.lr_schedule != "cosine" or budget <= 0 or step < cfg.warmup_steps or wall_s < FIT_AT * budget
            or not s_per_step):
        return None
    new = expected_steps(cfg, step, wall_s, s_per_step)
    if fitted is None:
        return new
    moved = abs(new - fitted)
    if moved > REFIT_SHARE * max(fitted - step, 0) and moved > REFIT_MIN * fitted:
        return new
    return None
