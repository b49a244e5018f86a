"""Random training windows read from a transformed dataset, in bounded memory.

A window holds ``receptive_field + T`` codes ``w``; the model input is
``w[:-1]`` and the targets of its ``T`` cropped outputs are ``w[receptive_field:]``
(output ``t`` predicts sample ``t + 1``, and the first ``receptive_field - 1``
outputs are dropped). Every window is one ranged read of a shard, so memory
does not depend on the dataset's size.

Batches are a pure function of ``(seed, step)``: the data state saved in a
checkpoint is the step alone, and the :class:`Prefetcher` prepares several
steps' batches at once, so that on S3 many ranged reads are in flight together
(each costs a round trip of tens of milliseconds; one at a time, they starve
the model).
"""
from __future__ import annotations

import collections
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np

from waveforms import storage
from waveforms.dataset import Dataset, Region
from waveforms.dataset.cache import ShardCache

log = logging.getLogger(__name__)

VAL_STREAM = 1  # RNG stream ids: training batches use (seed, 0, step)
READS_IN_FLIGHT = 32  # the default of the train stage's reads_in_flight key


def split_window(w: np.ndarray, receptive_field: int) -> tuple[np.ndarray, np.ndarray]:
    """Model input and cropped-output targets of windows ``w`` (..., receptive_field + T)."""
    return w[..., :-1], w[..., receptive_field:]


class WindowSampler:
    """Batches of random windows across regions, weighted by region length.

    The window positions come from the RNG first; then all the batch's windows
    are read at once through ``reader`` (ranged reads in flight together on
    S3), so positions, and hence batches, do not depend on how reads finish.
    """

    def __init__(self, ds: Dataset, regions_: list[Region], receptive_field: int, window: int, batch_size: int,
                 seed: int, with_genre: bool = False, reader: storage.RangeReader | None = None,
                 cache: ShardCache | None = None):
        self.ds = ds
        self.regions = regions_
        self.receptive_field = receptive_field
        self.length = receptive_field + window
        self.batch_size = batch_size
        self.seed = seed
        self.with_genre = with_genre
        self.reader = reader or shared_reader()
        self.cache = cache
        sizes = np.array([r.size - self.length + 1 for r in regions_], dtype=np.float64)
        self.probs = sizes / sizes.sum()

    def spans(self, rng: np.random.Generator, n: int) -> tuple[list[tuple[dict[str, Any], int, int]], np.ndarray]:
        """``n`` random ``(track, start, length)`` windows and their genre ids (n,)."""
        picks = rng.choice(len(self.regions), size=n, p=self.probs)
        spans, genre = [], np.empty(n, dtype=np.int32)
        for i, k in enumerate(picks):
            r = self.regions[k]
            spans.append((r.track, r.start + int(rng.integers(0, r.size - self.length + 1)), self.length))
            genre[i] = r.genre
        return spans, genre

    def windows(self, rng: np.random.Generator, n: int, part: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Windows ``part`` of ``n`` drawn from ``rng`` (uint8, (len, length)) and their genre ids.

        All ``n`` positions are drawn, whatever ``part`` is, so a part is the same
        windows as that slice of the whole draw; only the part's windows are read
        (all in flight at once).
        """
        spans, genre = self.spans(rng, n)
        spans, genre = spans[part], genre[part]
        out = np.empty((len(spans), self.length), dtype=np.uint8)
        for i, codes in enumerate(self.ds.read_windows(spans, self.reader, self.cache)):
            out[i] = codes
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

    def prefetch_depth(self) -> int:
        """Batches to prepare at once so that the reader's requests are all in flight (2 at least)."""
        return max(2, min(64, -(-self.reader.max_in_flight // self.batch_size)))


_SHARED: dict[int, storage.RangeReader] = {}
_SHARED_LOCK = threading.Lock()


def shared_reader(max_in_flight: int = READS_IN_FLIGHT) -> storage.RangeReader:
    """This process's reader with ``max_in_flight`` requests (one pool and client, shared by its samplers)."""
    with _SHARED_LOCK:
        if max_in_flight not in _SHARED:
            _SHARED[max_in_flight] = storage.RangeReader(max_in_flight)
        return _SHARED[max_in_flight]


class Prefetcher:
    """``fn(step)`` for consecutive steps, ``depth`` of them computed at once on threads, handed out in order.

    ``fn`` must be a pure function of the step (batches are), so computing
    several at once changes nothing but the time; memory holds ``depth`` results.
    An exception from ``fn`` is raised by the ``next`` that would have returned its result.
    """

    def __init__(self, fn: Callable[[int], Any], start: int, depth: int = 4):
        self._fn = fn
        self._next_step = start
        self._pool = ThreadPoolExecutor(max(1, depth), thread_name_prefix="window-prefetch")
        self._pending: collections.deque[Future] = collections.deque()
        for _ in range(max(1, depth)):
            self._submit()

    def _submit(self) -> None:
        self._pending.append(self._pool.submit(self._fn, self._next_step))
        self._next_step += 1

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        value = self._pending.popleft().result()
        self._submit()
        return value

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)  # cancels what has not started
        self._pending.clear()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
