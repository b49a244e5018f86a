"""The nearest training window of every second of a clip: the search shared by the memorisation check
and the index's calibration."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from waveforms.evaluate import ann
from waveforms.evaluate.embed import EmbeddingSpec, Projection, features_at, second_starts


@dataclass(frozen=True)
class SecondMatch:
    """Second ``second`` of a clip: its nearest index vector ``label`` (-1: none) and the offset in that
    vector's track that lines up with the start of the second."""

    second: int
    label: int
    offset_s: float
    similarity: float


@dataclass
class Matcher:
    spec: EmbeddingSpec
    projection: Projection
    index: Any
    offset_s: np.ndarray  # per vector

    def seconds(self, codes: np.ndarray, mu: int = 255) -> list[SecondMatch]:
        """Each whole second of ``codes``: the best match over the window offsets tried for it."""
        codes = np.asarray(codes, dtype=np.uint8).reshape(-1)
        groups = second_starts(len(codes), self.spec)
        if not groups:
            return []
        starts = np.concatenate(groups)
        vectors = self.projection(features_at(codes, starts, self.spec, mu))
        sims, labels = ann.search(self.index, vectors, 1)
        out, i, sr = [], 0, self.spec.sample_rate
        for k, g in enumerate(groups):
            s, lab = sims[i:i + len(g), 0], labels[i:i + len(g), 0]
            j = int(np.argmax(np.where(lab >= 0, s, -np.inf)))
            if lab[j] < 0:
                out.append(SecondMatch(k, -1, float("nan"), float("nan")))
            else:
                shift = (g[j] - k * sr) / sr
                out.append(SecondMatch(k, int(lab[j]), float(self.offset_s[lab[j]]) - shift, float(s[j])))
            i += len(g)
        return out
