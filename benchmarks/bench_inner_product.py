"""The combined and soft distances as one inner-product search (#7), against the level-by-level search.

Run:  .venv/bin/python benchmarks/bench_inner_product.py --json bench-output/inner-product.json
      .venv/bin/python benchmarks/bench_inner_product.py --small      (a quick smoke run)

1,000,000 synthetic items (100 classes with a planted two-level hierarchy, 128 dims; treeseek.hierarchy.synthetic),
1,000 queries, k = 100. Hard leaves: the level-by-level search (HierarchicalIndex) (the core issue's exact search)
against an exact FAISS flat inner-product search over the augmented vectors [x̂, Gᵀp], and a numpy full
scan of the direct formula as the reference. Soft leaves, which the level-by-level search cannot rank:
the flat inner-product search, an IVF one (approximate: recall against the exact top-k) and the numpy
scan. All run in one process on the same data.
"""
from __future__ import annotations

import argparse
import json
import platform

import numpy as np

from treeseek.io.files import atomic_write_json
from treeseek.model import DEFAULT_TEMPERATURE, TreeseekModel
from treeseek.search import smallest_k
from treeseek.search.distances import normalize_rows
from treeseek.search.hierarchical_index import HierarchicalIndex
from treeseek.search.inner_product import InnerProductIndex, augment, tree_factor

from common import synthetic_split, timed


def direct_scan(queries, query_posteriors, items, item_posteriors, lca, alpha, k, chunk=50):
    """Brute force: D_cos + alpha * p_qᵀ L p_i to every item, then the top-k."""
    qn, xn, ids = normalize_rows(queries), normalize_rows(items), np.arange(len(items))
    out_d, out_i = [], []
    for start in range(0, len(qn), chunk):
        rows = slice(start, start + chunk)
        keys = np.clip(1.0 - qn[rows] @ xn.T, 0.0, 2.0) + alpha * (query_posteriors[rows] @ lca) @ item_posteriors.T
        d, i = smallest_k(keys, ids, k)
        out_d.append(d)
        out_i.append(i)
    return np.concatenate(out_d), np.concatenate(out_i)


def agreement(reference, candidate) -> dict:
    (d_ref, i_ref), (d_new, i_new) = reference, candidate
    recall = np.mean([len(np.intersect1d(a, b)) / len(a) for a, b in zip(i_ref, i_new)])
    return {"recall_of_reference_top_k": round(float(recall), 5),
            "max_abs_distance_difference": float(np.max(np.abs(d_ref - d_new)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="100,000 items, for a smoke run")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--alpha", type=float, default=1.0)
    args = parser.parse_args()
    per_class, k, alpha = (1000 if args.small else 10000), 100, args.alpha
    X, Q, y, _, fit_rows, class_names = synthetic_split(per_class)
    model = TreeseekModel(hierarchy="visual", threshold="auto", max_components=128, temperature=args.temperature)
    model.fit(X[fit_rows], y[fit_rows], class_names)
    tree, G = model.hierarchy_, tree_factor(model.hierarchy_)
    leaves, query_leaves = model.assign(X), model.assign(Q)
    one_hot = np.eye(model.n_classes_)
    results = {"machine": f"{platform.processor() or platform.machine()}, numpy {np.__version__}",
               "n_database": len(X), "n_queries": len(Q), "dim": X.shape[1], "k": k, "alpha": alpha,
               "temperature": args.temperature, "tree_shape": tree.shape(),
               "augmented_dim": X.shape[1] + G.shape[1]}
    print(json.dumps(results), flush=True)

    level_index = HierarchicalIndex(tree)
    _, t_add = timed(level_index.add, X, leaves)
    level, t_level = timed(level_index.search, Q, query_leaves, k, alpha=alpha)
    ip_index = InnerProductIndex()
    _, t_ip_add = timed(ip_index.add, augment(X, one_hot[leaves], G))
    hard_ip, t_ip = timed(ip_index.search, augment(Q, one_hot[query_leaves], G, alpha), k, alpha)
    hard_scan, t_scan = timed(direct_scan, Q, one_hot[query_leaves], X, one_hot[leaves], tree.normalized_lca,
                              alpha, k)
    results["hard"] = {
        "seconds_level_by_level_add": round(t_add, 2), "seconds_level_by_level_search": round(t_level, 3),
        "seconds_inner_product_add": round(t_ip_add, 2), "seconds_inner_product_search": round(t_ip, 3),
        "seconds_numpy_full_scan": round(t_scan, 2),
        "inner_product_over_level_by_level_time": round(t_ip / t_level, 2),
        "level_by_level_vs_scan": agreement(hard_scan, level), "inner_product_vs_scan": agreement(hard_scan, hard_ip),
    }
    print(json.dumps(results["hard"]), flush=True)
    del ip_index

    item_post, query_post = model.posteriors(X), model.posteriors(Q)
    items, queries = augment(X, item_post, G), augment(Q, query_post, G, alpha)
    soft_scan, t_soft_scan = timed(direct_scan, Q, query_post, X, item_post, tree.normalized_lca, alpha, k)
    flat = InnerProductIndex()
    _, t_flat_add = timed(flat.add, items)
    soft_ip, t_flat = timed(flat.search, queries, k, alpha)
    del flat
    ivf = InnerProductIndex("IVF1024,Flat", nprobe=32)
    _, t_ivf_add = timed(ivf.add, items)
    soft_ivf, t_ivf = timed(ivf.search, queries, k, alpha)
    results["soft"] = {
        "mean_posterior_entropy_nats": float(np.mean(-(query_post * np.log(np.maximum(query_post, 1e-300))).sum(1))),
        "seconds_numpy_full_scan": round(t_soft_scan, 2),
        "seconds_inner_product_flat_add": round(t_flat_add, 2), "seconds_inner_product_flat_search": round(t_flat, 3),
        "numpy_scan_over_flat_time": round(t_soft_scan / t_flat, 2),
        "seconds_ivf_train_and_add": round(t_ivf_add, 2), "seconds_ivf_search": round(t_ivf, 3),
        "flat_over_ivf_time": round(t_flat / t_ivf, 2),
        "flat_vs_scan": agreement(soft_scan, soft_ip), "ivf_vs_scan": agreement(soft_scan, soft_ivf),
    }
    print(json.dumps(results["soft"]), flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
