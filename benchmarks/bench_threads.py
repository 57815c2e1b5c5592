"""What running one-query FAISS searches on one thread buys (``treeseek.search.threads``).

Run:  .venv/bin/python benchmarks/bench_threads.py --json bench-output/threads.json
      .venv/bin/python benchmarks/bench_threads.py --items 10000      (a quick smoke run)

The index and queries of bench_server (synthetic, 100 classes, 128 dims) are searched one query per call, as
a server request or a command line does, through ``querying.run_search``: first as treeseek does it
(one FAISS thread for one query), then with FAISS left at its default threads, the competitor, in the same
process. Both must return the same ids.
"""
from __future__ import annotations

import contextlib
import json
import time

import numpy as np

from treeseek.apps.querying import Queries, index_target, run_search
from treeseek.index import TreeIndex, soft_search
from treeseek.io.files import atomic_write_json
from treeseek.search import Ranking, backends

from common import markdown_table, result_ids, synthetic_setup

QUERIES = 300


def per_query(index: TreeIndex, Q: np.ndarray, method: str) -> tuple[float, np.ndarray]:
    target, ranking = index_target(index), Ranking(method)
    run_search(target, Queries(Q[:1], [0]), 10, ranking)  # warm: builds the search structures
    started = time.perf_counter()
    ids = [result_ids(run_search(target, Queries(Q[q : q + 1], [q]), 10, ranking))[0] for q in range(len(Q))]
    return (time.perf_counter() - started) / len(Q), np.array(ids)


def main() -> None:
    import faiss

    args, X, Q, y, model = synthetic_setup(__doc__.splitlines()[0])
    Q = Q[:QUERIES]
    results = {"n_database": len(X), "n_queries": len(Q), "k": 10, "faiss_threads": faiss.omp_get_max_threads(),
               "rows": []}
    setups = {"soft (flat inner product)": ("exact", "soft"), "cosine, FAISS HNSW backend": ("faiss-hnsw", "cosine")}
    for label, (backend, method) in setups.items():
        index = TreeIndex(model, backend=backend)
        index.add(X, y)
        one_thread, ids = per_query(index, Q, method)
        with contextlib.ExitStack() as undo:  # the competitor: FAISS's own thread count for every search
            for module in (soft_search, backends):
                undo.enter_context(_patched(module, "faiss_threads_for", contextlib.nullcontext))
            default_threads, default_ids = per_query(index, Q, method)
        row = {"search": label, "ms_per_query_one_thread": round(1000 * one_thread, 2),
               "ms_per_query_default_threads": round(1000 * default_threads, 2),
               "speedup": round(default_threads / one_thread, 2), "identical_ids": bool(np.array_equal(ids, default_ids))}
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    print()
    print(markdown_table(["search, one query per call", "ms per query, one FAISS thread",
                          f"ms per query, FAISS's {results['faiss_threads']} threads", "speed-up", "identical ids"],
                         [[row["search"], row["ms_per_query_one_thread"], row["ms_per_query_default_threads"],
                           f"{row['speedup']}×", row["identical_ids"]] for row in results["rows"]]))
    if args.json:
        atomic_write_json(args.json, results)


@contextlib.contextmanager
def _patched(module, name: str, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


if __name__ == "__main__":
    main()
