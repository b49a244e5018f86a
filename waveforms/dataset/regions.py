"""Where training and validation windows come from: the regions of a dataset's tracks.

Validation uses the ``val`` tracks; a dataset without any holds out the last
tenth (at least one window) of each training track, and leaves it out of training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from waveforms.dataset.format import Dataset
from waveforms.runtime.errors import UserError

HELD_OUT_FRACTION = 0.1


@dataclass(frozen=True)
class Region:
    """A sample range ``[start, end)`` of one track that windows are drawn from."""

    track: dict[str, Any]
    start: int
    end: int
    genre: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start


def genre_vocabulary(ds: Dataset) -> list[str]:
    """Sorted genre names of the dataset's tracks ("" for tracks without one)."""
    return sorted({str(t.get("genre") or "") for t in ds.tracks})


def regions(ds: Dataset, length: int, genres: list[str] | None = None) -> tuple[list[Region], list[Region], str]:
    """Training and validation regions that fit a window of ``length``, and how val was chosen.

    Validation uses the ``val`` tracks; without any, the last tenth of each
    training track is held out (and left out of training).
    """
    index = {g: i for i, g in enumerate(genres or [])}

    def region(t, start, end):
        return Region(t, start, end, index.get(str(t.get("genre") or ""), 0))

    train_tracks, val_tracks = ds.split("train"), ds.split("val")
    if val_tracks:
        train = [region(t, 0, int(t["num_samples"])) for t in train_tracks]
        val = [region(t, 0, int(t["num_samples"])) for t in val_tracks]
        how = f"{len(val_tracks)} val tracks"
    else:
        train, val = [], []
        for t in train_tracks:
            n = int(t["num_samples"])
            if n < length:
                continue
            cut = n - max(length, int(n * HELD_OUT_FRACTION))
            train.append(region(t, 0, cut))
            val.append(region(t, cut, n))
        how = f"no val tracks: held out the last {HELD_OUT_FRACTION:.0%} (at least one window) of each track"
    train = [r for r in train if r.size >= length]
    val = [r for r in val if r.size >= length]
    if not train:
        longest = max(int(t["num_samples"]) for t in ds.tracks)
        raise UserError(
            f"no track in {ds.root} is long enough for a window of {length} samples "
            f"(longest: {longest}); use a smaller --window or preset"
        )
    return train, val, how
