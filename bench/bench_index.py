"""Nearest-neighbour index benchmark: FAISS index kinds on synthetic unit vectors, and real embeddings.

Prints one table row per index: build time, bytes per vector, query p50/p95 (one
query at a time) and recall@10 against exact search on held-out queries. The
synthetic vectors are clustered like audio embeddings (a mixture of Gaussians in
``--dims`` dimensions, 64 as the index's embedding, L2-normalised); ``--real DATASET``
adds the embeddings of a dataset's index (``waveforms index`` first). Exact search
(``Flat``) is the reference of the recall column.

    .venv/bin/python bench/bench_index.py --n 1000000 [--real demo-out/dataset]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from waveforms.evaluate import ann

DIMS = 64


def synthetic(n: int, seed: int = 0, clusters: int = 2000, dims: int = DIMS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dims)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dims)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(name: str, factory: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, nprobe: int = 32,
            ef: int = 64) -> dict:
    t0 = time.perf_counter()
    index = ann.build(factory, base.shape[1], base[:100_000])
    index.add(base)
    build_s = time.perf_counter() - t0
    ann.set_search_params(index, nprobe, ef)
    size = len(ann.to_bytes(index))
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, labels = index.search(q[None, :], 10)
        times.append(time.perf_counter() - t)
        found.append(labels[0])
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    return {"data": name, "index": factory, "n": len(base), "build_s": build_s, "bytes_per_vector": size / len(base),
            "p50_ms": 1e3 * np.percentile(times, 50), "p95_ms": 1e3 * np.percentile(times, 95), "recall@10": recall}


def exact(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    index = ann.build("Flat", base.shape[1], base[:1])
    index.add(base)
    return index.search(queries, 10)[1]


def run(name: str, base: np.ndarray, queries: np.ndarray, factories: list[str]) -> list[dict]:
    truth = exact(base, queries)
    return [measure(name, f, base, queries, truth) for f in factories]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--dims", type=int, default=DIMS)
    ap.add_argument("--real", default="", help="a dataset whose index to benchmark too")
    ap.add_argument("--factories", default="Flat;IVF1024,SQ8;IVF1024,SQ4;HNSW32", help="FAISS factory strings, ';'-separated")
    args = ap.parse_args()
    factories = args.factories.split(";")
    base = synthetic(args.n + args.queries, dims=args.dims)
    rows = run("synthetic", base[args.queries:], base[:args.queries], factories)
    if args.real:
        from waveforms.evaluate.memorisation import LoadedIndex
        from waveforms.evaluate.index_format import index_uri

        loaded = LoadedIndex.open(index_uri(args.real))
        vecs = loaded.index.reconstruct_n(0, loaded.index.ntotal)
        q = min(args.queries, len(vecs) // 10)
        nlist = max(1, 2 ** int(np.log2(max(1, (len(vecs) - q) / 39))))
        rows += run("real", vecs[q:], vecs[:q], ["Flat", f"IVF{min(nlist, 1024)},SQ8", f"IVF{min(nlist, 1024)},SQ4",
                                                  "HNSW32"])
    print("| data | index | vectors | build s | bytes/vector | query p50 ms | query p95 ms | recall@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['data']} | {r['index']} | {r['n']:,} | {r['build_s']:.1f} | {r['bytes_per_vector']:.1f} | "
              f"{r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['recall@10']:.3f} |")


if __name__ == "__main__":
    main()
