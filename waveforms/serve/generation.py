"""Generation for the studio: loaded models, a bound on concurrent runs, incremental chunks.

A :class:`Job` steps the fast generator's cached state one chunk at a time, so a
response can send each chunk as soon as it exists and stop when the client goes
away. It starts and draws with :func:`waveforms.model.sampling.start_sampler` and
:func:`waveforms.model.sampling.draw`, as ``waveforms generate`` does, so the same seed
gives the same samples as ``waveforms generate --seed S`` whatever the chunk sizes.
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from waveforms.model import sampling

FIRST_CHUNK = 800  # samples: the first chunk is small so playback can start at once
CHUNK = 2048  # samples per later chunk: bounds the time one step holds the interpreter


@dataclass
class Loaded:
    """A model ready to sample from: the WaveNet and its fused fast weights."""

    wavenet: Any
    weights: Any


class Models:
    """An LRU of loaded models keyed by location and model.json contents."""

    def __init__(self, size: int = 4):
        self.size = size
        self._cache: collections.OrderedDict[tuple[str, str], Loaded] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, uri: str, meta_text: str) -> Loaded:
        key = (uri, meta_text)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            from waveforms.model import load  # TensorFlow
            from waveforms.model.fastgen import FastWeights  # numba

            wavenet = load(uri)
            loaded = Loaded(wavenet, FastWeights.from_keras(wavenet.keras_model, wavenet.config))
            self._cache[key] = loaded
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
            return loaded


class Limiter:
    """At most ``limit`` generations at once; :meth:`try_acquire` never waits."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0
        self.stopped_early = 0  # generations ended by a client that went away
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def release(self, finished: bool) -> None:
        with self._lock:
            self.active -= 1
            if not finished:
                self.stopped_early += 1


class Job:
    """One generation, advanced chunk by chunk with :meth:`next_chunk`."""

    def __init__(self, loaded: Loaded, n_samples: int, *, temperature: float, seed: int, top_p: float = 1.0,
                 genre: str | None = None, prime: np.ndarray | None = None):
        self.n = int(n_samples)
        self.done = 0
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.sampler = sampling.start_sampler(loaded.weights, loaded.wavenet, 1, genre, prime)
        self.rng = np.random.default_rng(seed)

    @property
    def finished(self) -> bool:
        return self.done >= self.n

    def next_chunk(self) -> np.ndarray:
        """The next chunk of new codes (uint8); empty once all ``n`` samples are made."""
        size = min(FIRST_CHUNK if self.done == 0 else CHUNK, self.n - self.done)
        if size <= 0:
            return np.zeros(0, np.uint8)
        codes = sampling.draw(self.sampler, self.rng, size, 1, self.temperature, self.top_p)[0]
        self.done += size
        return codes


class Results:
    """Finished generations' WAV bytes, so a download or a redraw does not generate again."""

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple, data: bytes) -> None:
        if len(data) > self.max_bytes // 4:
            return
        with self._lock:
            self._items[key] = data
            while sum(map(len, self._items.values())) > self.max_bytes:
                self._items.popitem(last=False)
