"""What the HTTP server costs: `treeseek serve` answering feature queries, against the same search in-process.

Run:  .venv/bin/python benchmarks/bench_server.py --json bench-output/server.json
      .venv/bin/python benchmarks/bench_server.py --items 10000      (a quick smoke run)

A persistent index of synthetic items (100 classes with a planted two-level hierarchy, 128 dims; the
split of bench_inner_product) is served by a real `treeseek serve` process (uvicorn) on this machine,
and a client sends it top-10 requests over HTTP, one query per request and then 100 per request. The
first competitor is plain FAISS ``IndexFlatIP`` over the same unit vectors in this process (cosine, float32,
the same threads, in calls of the same size), what a user would pick instead; the second is
`querying.run_search` on the same index opened in this process: the identical search without HTTP and JSON.
The server and run_search must return the same ids.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from treeseek.apps.querying import Queries, index_target, run_search
from treeseek.index import TreeIndex
from treeseek.io.files import atomic_write_json
from treeseek.search import Ranking
from treeseek.search.distances import normalize_rows

from common import markdown_table, post, result_ids, serve_process, synthetic_setup


def plain_faiss(X: np.ndarray, Q: np.ndarray, batch: int, k: int = 10) -> float:
    """Milliseconds per query of plain FAISS flat (cosine), in calls of ``batch`` queries."""
    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(normalize_rows(X).astype(np.float32))
    unit = normalize_rows(Q).astype(np.float32)
    flat.search(unit[:batch], k)
    started = time.perf_counter()
    for s in range(0, len(Q), batch):
        flat.search(unit[s : s + batch], k)
    return round(1000 * (time.perf_counter() - started) / len(Q), 3)


def measure(directory: Path, Q: np.ndarray, method: str, batch: int, port: int, k: int = 10) -> dict:
    """Seconds per query over HTTP and in-process, for requests of ``batch`` queries each."""
    url = f"http://127.0.0.1:{port}/api/search/features"
    target, ranking = index_target(TreeIndex.open(directory)), Ranking(method)
    post(url, {"features": Q[:batch].tolist(), "k": k, "method": method})  # both sides warm up first
    run_search(target, Queries(Q[:batch], list(range(batch))), k, ranking)
    started = time.perf_counter()
    served = [result_ids(post(url, {"features": Q[s : s + batch].tolist(), "k": k, "method": method}))
              for s in range(0, len(Q), batch)]
    http_seconds = time.perf_counter() - started
    started = time.perf_counter()
    direct = [result_ids(run_search(target, Queries(Q[s : s + batch], list(range(s, s + batch))), k, ranking))
              for s in range(0, len(Q), batch)]
    direct_seconds = time.perf_counter() - started
    same = all(np.array_equal(a, b) for a, b in zip(served, direct))
    return {"method": method, "queries_per_request": batch, "queries": len(Q),
            "ms_per_query_http": round(1000 * http_seconds / len(Q), 3),
            "ms_per_query_in_process": round(1000 * direct_seconds / len(Q), 3),
            "http_over_in_process_time": round(http_seconds / direct_seconds, 2), "identical_ids": same}


def main() -> None:
    args, X, Q, y, model = synthetic_setup(__doc__.splitlines()[0])
    results = {"n_database": len(X), "n_queries": len(Q), "dim": X.shape[1], "k": 10,
               "tree_shape": model.hierarchy_.shape(), "rows": []}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "index"
        index = TreeIndex(model)
        index.add(X, y)
        index.save(directory)
        with serve_process(directory) as port:
            for method in ("soft", "combined"):
                for batch in (1, 100):
                    row = measure(directory, Q, method, batch, port)
                    results["rows"].append(row)
                    print(json.dumps(row), flush=True)
    results["plain_faiss_flat_ms_per_query"] = {batch: plain_faiss(X, Q, batch) for batch in (1, 100)}
    print()
    faiss_ms = results["plain_faiss_flat_ms_per_query"]
    print(markdown_table(
        ["ranking", "queries per request", "plain FAISS flat, ms per query (in process)", "ms per query, HTTP",
         "HTTP / plain FAISS", "ms per query, in process", "HTTP / in process"],
        [[row["method"], row["queries_per_request"], faiss_ms[row["queries_per_request"]], row["ms_per_query_http"],
          f"{row['ms_per_query_http'] / faiss_ms[row['queries_per_request']]:.2f}×", row["ms_per_query_in_process"],
          f"{row['http_over_in_process_time']}×"] for row in results["rows"]]))
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
