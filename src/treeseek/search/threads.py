"""How many threads FAISS may use for one search.

FAISS parallelises a search over its queries, so a single query gains nothing from more threads. Worse,
the idle threads spin after the search and compete with the BLAS threads of the rest of the request: a
soft search of one query over 100,000 items took 40 ms with FAISS's 2 threads and 15 ms with one on this
project's 2-core machine (benchmarks/bench_threads.py). A search of one query therefore runs on one thread.
"""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def faiss_threads_for(n_queries: int):
    """Within the block, FAISS uses one thread when there is one query (OpenMP's setting is per thread)."""
    if n_queries != 1:
        yield
        return
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
