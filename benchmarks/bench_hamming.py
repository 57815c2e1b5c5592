"""Hamming search speed: exact top-100 over 1M and 10M random 64-bit codes, against plain FAISS flat over float
vectors and a numpy popcount scan.

Run:  .venv/bin/python benchmarks/bench_hamming.py --json bench-output/hamming.json

The first competitor is what a user would pick instead of codes: plain FAISS ``IndexFlatIP`` over float32 unit
vectors (256-d, as many as there are codes, the same threads), in the same run. The exactness reference is the
numpy popcount scan: it and treeseek's Hamming search return the same ranking (ties by smaller id); the run
asserts it on the scanned queries.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import faiss
import numpy as np

from treeseek.codes import hamming_distances
from treeseek.io.files import atomic_write_json
from treeseek.search.hamming import HammingIndex

K = 100
FLOAT_DIM = 256
CHUNK = 1 << 20


def one_at_a_time_ms(search, queries: np.ndarray) -> float:
    """Median milliseconds of ``search`` called with one query at a time."""
    single = []
    for query in queries:
        start = time.perf_counter()
        search(query[None, :])
        single.append(time.perf_counter() - start)
    return 1000 * float(np.median(single))


def float_competitor(n: int, n_queries: int, n_single: int, seed: int) -> dict:
    """Plain FAISS flat over n random float32 unit vectors: batched and one-query times, and its memory."""
    rng = np.random.default_rng(seed)
    flat = faiss.IndexFlatIP(FLOAT_DIM)
    for first in range(0, n, CHUNK):
        rows = rng.standard_normal((min(CHUNK, n - first), FLOAT_DIM), dtype=np.float32)
        flat.add(rows / np.linalg.norm(rows, axis=1, keepdims=True))
    queries = rng.standard_normal((n_queries, FLOAT_DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    start = time.perf_counter()
    flat.search(queries, K)
    t_batch = time.perf_counter() - start
    single_ms = one_at_a_time_ms(lambda query: flat.search(query, K), queries[:n_single])
    return {"faiss_flat_float_ms_per_query_batched": round(1000 * t_batch / n_queries, 2),
            "faiss_flat_float_ms_per_query_one_at_a_time": round(single_ms, 2),
            "faiss_flat_float_gb": round(n * FLOAT_DIM * 4 / 1e9, 2)}


def popcount_scan(queries: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """The naive method: XOR + popcount against every code, then a stable top-k per query."""
    out = []
    for query in queries:
        distances = hamming_distances(query[None, :], codes)[0]
        kth = np.partition(distances, k - 1)[k - 1]
        candidates = np.flatnonzero(distances <= kth)
        out.append(candidates[np.argsort(distances[candidates], kind="stable")][:k])
    return np.array(out)


def bench(n: int, bits: int, n_queries: int, n_scan: int) -> dict:
    rng = np.random.default_rng(n)
    codes = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (n_queries, bits // 8), dtype=np.uint8)
    index = HammingIndex(bits)
    start = time.perf_counter()
    index.add(codes)
    t_add = time.perf_counter() - start
    start = time.perf_counter()
    _, ids = index.search(queries, K)
    t_batch = time.perf_counter() - start
    single_ms = one_at_a_time_ms(lambda query: index.search(query, K), queries[:n_scan])
    start = time.perf_counter()
    scanned = popcount_scan(queries[:n_scan], codes, K)
    t_scan = (time.perf_counter() - start) / n_scan
    assert np.array_equal(ids[:n_scan], scanned), "FAISS and the popcount scan must rank identically"
    index = codes = None
    competitor = float_competitor(n, n_queries, n_scan, seed=n + 1)
    return {"n": n, "bits": bits, "k": K, "add_seconds": round(t_add, 2), **competitor,
            "codes_gb": round(n * bits / 8 / 1e9, 3),
            "ms_per_query_batched": round(1000 * t_batch / n_queries, 2),
            "ms_per_query_one_at_a_time": round(single_ms, 2),
            "ms_per_query_numpy_popcount_scan": round(1000 * t_scan, 1),
            "speedup_one_at_a_time": round(1000 * t_scan / single_ms, 1),
            "identical_rankings": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--json")
    args = parser.parse_args()
    results = [bench(int(n), 64, 1000, 20) for n in args.sizes.split(",")]
    report = {"machine": f"{platform.processor() or platform.machine()}, numpy {np.__version__}", "results": results}
    print(json.dumps(report, indent=2))
    if args.json:
        atomic_write_json(args.json, report)


if __name__ == "__main__":
    main()
