"""Milvus as the engine: push an index into a collection, then rank there, against the index's own search.

Run:  .venv/bin/python benchmarks/bench_engine.py --json bench-output/engine.json
      .venv/bin/python benchmarks/bench_engine.py --items 10000      (a quick smoke run)

A persistent index of synthetic items (100 classes with a planted two-level hierarchy, 128 dims; the
split of bench_inner_product) is pushed into Milvus Lite (a local ``.db`` file: the Milvus API served by
a local engine), into an exact FLAT collection and an HNSW one. 1,000 queries then ask for their soft
top-10 from each (one call of 1,000 queries), against plain FAISS ``IndexFlatIP`` over the same unit vectors
(cosine, float32, the same threads; the first competitor, what a user would pick instead), and
``TreeIndex.search`` in this process (the exact group search): the reference for recall and distances.
Milvus Lite is not a Milvus cluster: the figures show that the vectors and the ranking are the same, and
what the local engine costs, not how a cluster scales.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import faiss
import numpy as np

from treeseek.index import TreeIndex
from treeseek.index.milvus import MilvusIndex
from treeseek.io.files import atomic_write_json
from treeseek.search import Ranking
from treeseek.search.distances import normalize_rows

from common import markdown_table, synthetic_setup, timed

K = 10


def main() -> None:
    args, X, Q, y, model = synthetic_setup(__doc__.splitlines()[0])
    index = TreeIndex(model)
    index.add(X, y)
    index.search(Q[:1], K, ranking=Ranking("soft"))  # builds the in-process inner-product index before timing
    (exact_D, exact_ids), in_process = timed(index.search, Q, K, ranking=Ranking("soft"))
    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(normalize_rows(X).astype(np.float32))
    _, faiss_seconds = timed(flat.search, normalize_rows(Q).astype(np.float32), K)
    flat = None
    results = {"n_database": len(X), "n_queries": len(Q), "dim": X.shape[1], "k": K,
               "tree_shape": model.hierarchy_.shape(), "in_process_seconds": round(in_process, 3),
               "plain_faiss_flat_seconds": round(faiss_seconds, 4), "rows": []}
    print(json.dumps(results), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        uri = str(Path(scratch) / "milvus.db")
        for index_type, build, search in (("FLAT", {}, {}), ("HNSW", {"M": 16, "efConstruction": 200}, {"ef": 64})):
            engine = MilvusIndex(model, uri, index_type.lower(), "soft", index_type, build, search)
            _, push_seconds = timed(engine.sync, index, progress=True)
            # opened anew, as by a server started after the push (right after inserting, Milvus Lite scans);
            # closing the client lets Milvus Lite finish writing its index files
            engine.client_.close()
            engine = MilvusIndex(model, uri, index_type.lower(), "soft", index_type, build, search)
            _, load_seconds = timed(engine.search, Q[:1], K)
            (D, ids), seconds = timed(engine.search, Q, K)
            row = {"index_type": index_type, "push_seconds": round(push_seconds, 1),
                   "load_and_first_query_seconds": round(load_seconds, 2),
                   "items_per_second_pushed": round(len(X) / push_seconds),
                   "search_seconds": round(seconds, 3), "ms_per_query": round(1000 * seconds / len(Q), 3),
                   "time_over_in_process": round(seconds / in_process, 2),
                   "time_over_plain_faiss_flat": round(seconds / faiss_seconds, 1),
                   "recall_of_exact_top10": float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, exact_ids)])),
                   "max_distance_difference": float(np.abs(np.sort(D, 1) - np.sort(exact_D, 1)).max())}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    print(f"\nplain FAISS flat (cosine): {1000 * faiss_seconds / len(Q):.3f} ms per query; "
          f"in process (TreeIndex.search, soft): {1000 * in_process / len(Q):.3f} ms per query")
    print(markdown_table(
        ["search", "push, items/s", "ms per query", "time / plain FAISS flat", "time / in process",
         "recall of exact top-10"],
        [["plain FAISS flat (cosine, no tree)", "—", round(1000 * faiss_seconds / len(Q), 3), "1.0×", "—", "—"],
         ["treeseek in process (soft)", "—", round(1000 * in_process / len(Q), 3),
          f"{in_process / faiss_seconds:.1f}×", "1.0×", "1.000"]]
        + [[f"Milvus Lite {row['index_type']} (soft)", f"{row['items_per_second_pushed']:,}", row["ms_per_query"],
            f"{row['time_over_plain_faiss_flat']}×", f"{row['time_over_in_process']}×",
            f"{row['recall_of_exact_top10']:.3f}"] for row in results["rows"]]))
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
