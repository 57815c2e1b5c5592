"""What `treeseek serve --workers N` buys: requests per second under concurrent clients, against one process.

Run:  .venv/bin/python benchmarks/bench_server_workers.py --json bench-output/server-workers.json
      .venv/bin/python benchmarks/bench_server_workers.py --items 10000      (a quick smoke run)

The index and queries of bench_server (synthetic, 100 classes, 128 dims) are served by a real `treeseek serve`
process with 1 worker (the competitor: one request at a time) and then with more; 4 client threads in this
process send 1,000 single-query soft top-10 requests. Every answer must equal the in-process search.
"""
from __future__ import annotations

import concurrent.futures
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from treeseek.apps.querying import Queries, index_target, run_search
from treeseek.index import TreeIndex
from treeseek.io.files import atomic_write_json
from treeseek.search import Ranking

from common import markdown_table, post, result_ids, serve_process, synthetic_setup

CLIENTS = 4
WORKERS = (1, 2)


def throughput(directory: Path, Q: np.ndarray, workers: int, expected: np.ndarray) -> dict:
    with serve_process(directory, "--workers", str(workers)) as port:
        url = f"http://127.0.0.1:{port}/api/search/features"

        def ask(q: int) -> np.ndarray:
            return result_ids(post(url, {"features": Q[q : q + 1].tolist(), "k": 10, "method": "soft"}))[0]

        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(ask, range(4 * workers * CLIENTS)))  # every worker opens the index and warms up
            started = time.perf_counter()
            answers = np.array(list(pool.map(ask, range(len(Q)))))
            seconds = time.perf_counter() - started
    return {"workers": workers, "clients": CLIENTS, "requests": len(Q), "seconds": round(seconds, 2),
            "requests_per_second": round(len(Q) / seconds, 1), "identical_ids": bool(np.array_equal(answers, expected))}


def main() -> None:
    args, X, Q, y, model = synthetic_setup(__doc__.splitlines()[0])
    results = {"n_database": len(X), "n_queries": len(Q), "dim": X.shape[1], "k": 10, "rows": []}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "index"
        index = TreeIndex(model)
        index.add(X, y)
        index.save(directory)
        index = TreeIndex.open(directory)
        expected = result_ids(run_search(index_target(index), Queries(Q, list(range(len(Q)))), 10, Ranking("soft")))
        for workers in WORKERS:
            row = throughput(directory, Q, workers, expected)
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    single = results["rows"][0]["requests_per_second"]
    print()
    print(markdown_table(["worker processes", "client threads", "requests per second", "vs 1 worker", "identical ids"],
                         [[row["workers"], row["clients"], row["requests_per_second"],
                           f"{row['requests_per_second'] / single:.2f}×", row["identical_ids"]]
                          for row in results["rows"]]))
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
