"""What the HTTP server costs: `treeseek serve` answering feature queries, against the same search in-process.

Run:  .venv/bin/python benchmarks/bench_server.py --json bench-output/server.json
      .venv/bin/python benchmarks/bench_server.py --items 10000      (a quick smoke run)

A persistent index of synthetic items (100 classes with a planted two-level hierarchy, 128 dims; the
split of bench_inner_product) is served by a real `treeseek serve` process (uvicorn) on this machine,
and a client sends it top-10 requests over HTTP, one query per request and then 100 per request. The
competitor is `querying.search_described` on the same index opened in this process: the identical
search without HTTP and JSON. The two must return the same ids.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from bench_inner_product import synthetic_split
from tables import markdown_table

from treeseek.apps.querying import search_described
from treeseek.index import TreeIndex
from treeseek.io.files import atomic_write_json
from treeseek.model import TreeseekModel


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as answer:
        return json.load(answer)


def wait_until_up(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {server.stderr.read().decode()}")
            time.sleep(0.2)


@contextlib.contextmanager
def serve_process(directory: Path, *options: str):
    """A real `treeseek serve DIRECTORY OPTIONS` on a free port, once it answers: yields the port."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "treeseek", "serve", str(directory), "--port", str(port),
                               *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/api/info", server)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=60)


def result_ids(report: dict) -> np.ndarray:
    return np.array([[hit["id"] for hit in query["results"]] for query in report["queries"]])


def measure(directory: Path, Q: np.ndarray, method: str, batch: int, port: int, k: int = 10) -> dict:
    """Seconds per query over HTTP and in-process, for requests of ``batch`` queries each."""
    url = f"http://127.0.0.1:{port}/api/search/features"
    index = TreeIndex.open(directory)
    post(url, {"features": Q[:batch].tolist(), "k": k, "method": method})  # both sides warm up first
    search_described(index, Q[:batch], k, method)
    started = time.perf_counter()
    served = [result_ids(post(url, {"features": Q[s : s + batch].tolist(), "k": k, "method": method}))
              for s in range(0, len(Q), batch)]
    http_seconds = time.perf_counter() - started
    started = time.perf_counter()
    direct = [np.array([[hit["id"] for hit in hits] for hits in search_described(index, Q[s : s + batch], k,
                                                                                     method)[1]])
              for s in range(0, len(Q), batch)]
    direct_seconds = time.perf_counter() - started
    same = all(np.array_equal(a, b) for a, b in zip(served, direct))
    return {"method": method, "queries_per_request": batch, "queries": len(Q),
            "ms_per_query_http": round(1000 * http_seconds / len(Q), 3),
            "ms_per_query_in_process": round(1000 * direct_seconds / len(Q), 3),
            "http_over_in_process_time": round(http_seconds / direct_seconds, 2), "identical_ids": same}


def synthetic_setup(description: str):
    """Arguments --items and --json, and the split of bench_inner_product at that size with the model fitted on
    it (PCA 128): ``(args, X, Q, y, model)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--items", type=int, default=100_000, help="database size (a multiple of 100)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    X, Q, y, _, fit_rows, class_names = synthetic_split(args.items // 100)
    return args, X, Q, y, TreeseekModel(max_components=128).fit(X[fit_rows], y[fit_rows], class_names)


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
    print()
    print(markdown_table(
        ["ranking", "queries per request", "ms per query, HTTP", "ms per query, in process", "HTTP / in process"],
        [[row["method"], row["queries_per_request"], row["ms_per_query_http"], row["ms_per_query_in_process"],
          f"{row['http_over_in_process_time']}×"] for row in results["rows"]]))
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
