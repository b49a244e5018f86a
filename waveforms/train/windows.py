"""Random training windows read from a transformed dataset, in bounded memory.

A window holds ``receptive_field + T`` codes ``w``; the model input is
``w[:-1]`` and the targets of its ``T`` cropped outputs are ``w[receptive_field:]``
(output ``t`` predicts sample ``t + 1``, and the first ``receptive_field - 1``
outputs are dropped). Every window is one ranged read of a shard, so memory
does not depend on the dataset's size.

Batches are a pure function of ``(seed, step)``: the data state saved in a
checkpoint is the step alone, and a background thread can prefetch ahead.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Iterator

import numpy as np

from waveforms import storage
from waveforms.dataset import Dataset, Region

log = logging.getLogger(__name__)

VAL_STREAM = 1  # RNG stream ids: training batches use (seed, 0, step)


def split_window(w: np.ndarray, receptive_field: int) -> tuple[np.ndarray, np.ndarray]:
    """Model input and cropped-output targets of windows ``w`` (..., receptive_field + T)."""
    return w[..., :-1], w[..., receptive_field:]


class WindowSampler:
    """Batches of random windows across regions, weighted by region length."""

    def __init__(self, ds: Dataset, regions_: list[Region], receptive_field: int, window: int, batch_size: int,
                 seed: int, with_genre: bool = False):
        self.ds = ds
        self.regions = regions_
        self.receptive_field = receptive_field
        self.length = receptive_field + window
        self.batch_size = batch_size
        self.seed = seed
        self.with_genre = with_genre
        sizes = np.array([r.size - self.length + 1 for r in regions_], dtype=np.float64)
        self.probs = sizes / sizes.sum()
        self._local = threading.local()

    def _client(self):
        if not storage.is_s3(self.ds.root):
            return None
        if not hasattr(self._local, "client"):
            self._local.client = storage.s3_client()
        return self._local.client

    def windows(self, rng: np.random.Generator, n: int, part: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Windows ``part`` of ``n`` drawn from ``rng`` (uint8, (len, length)) and their genre ids.

        All ``n`` positions are drawn, whatever ``part`` is, so a part is the same
        windows as that slice of the whole draw; only the part's windows are read.
        """
        picks = rng.choice(len(self.regions), size=n, p=self.probs)
        starts = [self.regions[k].start + int(rng.integers(0, self.regions[k].size - self.length + 1)) for k in picks]
        chosen = range(n)[part]
        out = np.empty((len(chosen), self.length), dtype=np.uint8)
        genre = np.empty(len(chosen), dtype=np.int32)
        client = self._client()
        for j, i in enumerate(chosen):
            r = self.regions[picks[i]]
            out[j] = self.ds.read_window(r.track, starts[i], self.length, client)
            genre[j] = r.genre
        return out, genre

    def batch_from(self, rng: np.random.Generator, part: slice = slice(None)) -> tuple[Any, np.ndarray]:
        w, genre = self.windows(rng, self.batch_size, part)
        x, y = split_window(w, self.receptive_field)
        x = x.astype(np.int32)
        return ((x, genre) if self.with_genre else x), y.astype(np.int32)

    def batch(self, step: int, stream: int = 0, part: slice = slice(None)) -> tuple[Any, np.ndarray]:
        """The batch for ``step`` (its windows ``part``): the same for the same (seed, stream, step), in any process."""
        return self.batch_from(np.random.default_rng([self.seed, stream, step]), part)

    def fixed_batches(self, n: int) -> list[tuple[Any, np.ndarray]]:
        """``n`` batches that stay the same for a seed (validation)."""
        return [self.batch(i, VAL_STREAM) for i in range(n)]


class Prefetcher:
    """Computes ``fn(step)`` for consecutive steps on a thread, at most ``depth`` ahead."""

    def __init__(self, fn: Callable[[int], Any], start: int, depth: int = 4):
        self._fn = fn
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(start,), daemon=True, name="window-prefetch")
        self._thread.start()

    def _run(self, step: int) -> None:
        while not self._stop.is_set():
            try:
                item = (self._fn(step), None)
            except BaseException as exc:  # handed to the consumer
                item = (None, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[1] is not None:
                return
            step += 1

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        value, exc = self._queue.get()
        if exc is not None:
            raise exc
        return value

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
