"""The approximate nearest-neighbour index (FAISS, inner product on L2-normalised vectors).

``factory = "auto"`` picks exact search (``Flat``) for small collections and
``IVF{nlist},SQ8`` (an inverted file with 8-bit scalar-quantised vectors, 1 byte
per dimension) for large ones; any FAISS factory string may be given instead.
"""
from __future__ import annotations

import logging
import math

import numpy as np

# faiss logs which CPU build it loaded, and that it has no GPU build, at INFO: not the stage output.
logging.getLogger("faiss").setLevel(logging.WARNING)

FLAT_UP_TO = 200_000  # vectors: exact search below this (about 3 ms per query at 64 dims, bench_index.py)


def choose_factory(factory: str, expected: int, train_size: int) -> str:
    """The FAISS factory string for ``expected`` vectors, with ``train_size`` vectors to train it on.

    IVF lists: about 4·sqrt(expected), a power of two, and at least 39 training vectors per list.
    """
    if factory != "auto":
        return factory
    if expected <= FLAT_UP_TO:
        return "Flat"
    nlist = 2 ** int(math.floor(math.log2(min(4 * math.sqrt(expected), max(train_size / 39, 1)))))
    return f"IVF{max(nlist, 1)},SQ8"


def build(factory: str, dims: int, train: np.ndarray):
    """An empty index of ``factory``, trained on ``train`` when it needs training."""
    import faiss

    index = faiss.index_factory(dims, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        x = np.ascontiguousarray(train, dtype=np.float32)
        ivf = faiss.extract_index_ivf(index) if "IVF" in factory else None
        if ivf is not None and len(x) < ivf.nlist:
            raise ValueError(f"{factory} needs at least {ivf.nlist} training vectors, got {len(x)}")
        index.train(x)
    return index


def set_search_params(index, nprobe: int, ef_search: int) -> None:
    """Search breadth: ``nprobe`` lists for IVF indexes, ``efSearch`` for HNSW."""
    import faiss

    try:
        faiss.extract_index_ivf(index).nprobe = nprobe
    except RuntimeError:
        pass
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = ef_search


def to_bytes(index) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


def from_bytes(data: bytes):
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def search(index, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Similarities and labels ``(n, k)``; labels are insertion order (-1: nothing found)."""
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
