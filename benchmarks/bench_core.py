"""Core benchmark: evaluation speed, exact hierarchical search against a full scan, tree building.

Run:  .venv/bin/python benchmarks/bench_core.py            (the README's figures)
      .venv/bin/python benchmarks/bench_core.py --small    (a quick smoke run)

Every competitor runs in the same process on the same data, and the ratio is
printed next to the raw times: for the search, plain FAISS flat (cosine, float32, the same threads) first,
then a float64 full scan of the combined distance, the exactness reference. Data are synthetic features with a planted
class hierarchy (treeseek.hierarchy.synthetic), so the results are reproducible.
"""
from __future__ import annotations

import argparse
import json
import platform

import faiss
import numpy as np

from treeseek.evaluation import evaluate_retrieval
from treeseek.hierarchy.builders import VisualHierarchyBuilder
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.io.features import FeatureSet
from treeseek.model import TreeseekModel
from treeseek.search import MemoryIndex, Ranking, smallest_k
from treeseek.search.distances import normalize_rows

from common import peak_rss_gb, timed, write_json


def bench_leave_one_out(branching, per_class, dim) -> dict:
    data = planted_hierarchy(branching, dim, per_class, scale=4.0, seed=11)
    model = TreeseekModel(hierarchy="visual", threshold=0.05).fit(data.features, data.labels, data.class_names)
    queries = FeatureSet(data.features, data.labels, data.class_names)
    one, t_one = timed(evaluate_retrieval, model, queries, methods=["combined"], ks=(1, 5, 10, 100),
                       taxonomy=data.hierarchy, progress=False)
    _, t_all = timed(evaluate_retrieval, model, queries, ks=(1, 5, 10, 100), taxonomy=data.hierarchy, progress=False)
    return {
        "n": len(data.features), "dim": dim,
        "seconds_combined_every_metric": round(t_one, 2),
        "seconds_five_methods_every_metric": round(t_all, 2),
        "combined_map@10": round(one.metrics["combined"]["map@10"], 4),
        "combined_mahp@250": round(one.metrics["combined"]["mahp@250"], 4),
    }


def full_scan(queries, query_leaves, vectors, leaves, lca, alpha, k, chunk=25):
    """Brute force: the combined distance to every database item, then the top-k."""
    qn, xn = normalize_rows(queries), normalize_rows(vectors)
    ids = np.arange(len(vectors))
    out_d, out_i = [], []
    for start in range(0, len(qn), chunk):
        rows = slice(start, start + chunk)
        keys = np.clip(1.0 - qn[rows] @ xn.T, 0.0, 2.0) + alpha * lca[query_leaves[rows]][:, leaves]
        d, i = smallest_k(keys, ids, k)
        out_d.append(d)
        out_i.append(i)
    return np.concatenate(out_d), np.concatenate(out_i)


def bench_search(branching, per_class, dim, n_queries, k, alpha, noise) -> dict:
    data = planted_hierarchy(branching, dim, per_class + 1, scale=4.0, noise=noise, seed=12)
    is_query = np.arange(len(data.labels)) % (per_class + 1) == 0
    X, Q = data.features[~is_query], data.features[is_query][:n_queries]
    y = data.labels[~is_query]
    fit_rows = np.flatnonzero(np.arange(len(X)) % max(1, per_class // 100) == 0)  # ~100 per class
    model, t_fit = timed(TreeseekModel(hierarchy="visual", threshold="auto", max_components=dim).fit,
                         X[fit_rows], y[fit_rows], data.class_names)
    leaves, t_assign = timed(model.assign, X)
    query_leaves = model.assign(Q)
    index = MemoryIndex(model)
    _, t_add = timed(index.add, X, known_labels=leaves)  # placed above, by the same model
    (d_fast, i_fast), t_fast = timed(index.search, Q, k, ranking=Ranking("combined", alpha=alpha))
    scored = index.scored_fraction_
    flat = faiss.IndexFlatIP(dim)  # the first competitor: plain FAISS, cosine, float32, the same threads
    flat.add(normalize_rows(X).astype(np.float32))
    _, t_faiss = timed(flat.search, normalize_rows(Q).astype(np.float32), k)
    flat = None
    lca = model.hierarchy_.normalized_lca
    (d_scan, i_scan), t_scan = timed(full_scan, Q, query_leaves, X, leaves, lca, alpha, k)
    return {
        "n_database": len(X), "n_queries": len(Q), "dim": dim, "k": k, "alpha": alpha,
        "tree_shape": model.fit_info_["tree_shape"],
        "seconds_fit_on_subsample": round(t_fit, 2), "seconds_assign_database": round(t_assign, 2),
        "seconds_index_add": round(t_add, 2),
        "seconds_hierarchical_search": round(t_fast, 3), "seconds_full_scan": round(t_scan, 2),
        "seconds_faiss_flat": round(t_faiss, 3), "speedup_over_faiss_flat": round(t_faiss / t_fast, 2),
        "speedup": round(t_scan / t_fast, 1),
        "queries_per_second_faiss_flat": round(len(Q) / t_faiss, 1),
        "queries_per_second_hierarchical": round(len(Q) / t_fast, 1),
        "queries_per_second_full_scan": round(len(Q) / t_scan, 1),
        "scored_fraction": round(scored, 5),
        "identical_ids": bool(np.array_equal(i_fast, i_scan)),
        "max_abs_distance_difference": float(np.max(np.abs(d_fast - d_scan))),
    }


def bench_hierarchy(branching, per_class, dim) -> dict:
    data = planted_hierarchy(branching, dim, per_class, scale=4.0, seed=13)
    features = data.features.astype(np.float64)
    builder, seconds = timed(VisualHierarchyBuilder(threshold=0.05).fit, features, data.labels, data.class_names)
    recovered = np.array_equal(builder.hierarchy_.lca_heights, data.hierarchy.lca_heights)
    return {"classes": len(data.class_names), "dim": dim, "n": len(features), "seconds": round(seconds, 2),
            "tree_shape": builder.shape_, "planted_tree_recovered": bool(recovered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.small:
        loo = ((4, 5, 5), 20, 128)
        search = ((10, 10, 10), 50, 128, 200, 100, 1.0, 0.5)
        tree = ((5, 5, 4), 30, 256)
    else:
        loo = ((5, 5, 4), 100, 128)                          # 10,000 x 10,000
        search = ((10, 10, 10), 1000, 128, 1000, 100, 1.0, 0.5)  # 1,000 queries over 1,000,000
        tree = ((10, 10, 10), 50, 256)                       # 1,000 classes at 256 dims
    results = {"machine": f"{platform.processor() or platform.machine()}, numpy {np.__version__}"}
    print("leave-one-out, every metric ...", flush=True)
    results["leave_one_out"] = bench_leave_one_out(*loo)
    print(json.dumps(results["leave_one_out"]), flush=True)
    print("exact hierarchical top-k against a full scan ...", flush=True)
    results["search"] = bench_search(*search)
    print(json.dumps(results["search"]), flush=True)
    print("visual hierarchy ...", flush=True)
    results["hierarchy"] = bench_hierarchy(*tree)
    print(json.dumps(results["hierarchy"]), flush=True)
    results["peak_rss_gb"] = round(peak_rss_gb(), 2)
    print(json.dumps(results, indent=2))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
