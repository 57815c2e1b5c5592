"""Hamming search re-ranked with the hierarchy: quality and time against the exact search over floats.

Run:  .venv/bin/python benchmarks/bench_rerank.py caltech101 --trees bench-output/trees-caltech101.json \
          --json bench-output/rerank-caltech101.json
      .venv/bin/python benchmarks/bench_rerank.py synthetic --json bench-output/rerank-synthetic.json

Protocol of HPDH: queries are the test split, the database is the train split, in a ``TreeIndex``.
The model takes the point that ``bench_trees.py`` chose on validation (``--trees``: its JSON), or
PCA 128 with a tied covariance and treeseek's defaults. Each hasher's codes are stored in the index
and searched three ways: Hamming distance alone, and the R nearest codes re-ranked by the paper's
combined distance (hard leaves) or by soft leaves. The competitors, in the same run: the exact search
of the float vectors with each ranking (one FAISS inner-product search for soft, level by level for
the others). Scores: mAP@10 and mAHP@250 against the WordNet taxonomy, on each query's top 250.
A check first: re-ranking every item (R = N) must give the exact soft search's distances.

``synthetic`` measures speed where codes are meant to help: 1,000,000 items (100 classes with a planted
two-level hierarchy, 128 dims; ``--items``), 1,000 queries, 64-bit ITQ codes. It times the exact soft
search (one FAISS flat inner-product search over [x̂, Gᵀp]; building that index is timed apart) against
Hamming search (exact, or FAISS's binary HNSW graph) + soft re-ranking of R candidates, and reports the
re-ranked top 100's recall of the exact top 100 and both top 100s' precision (the query's class's share).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from treeseek.codes import HPDHHasher, ITQHasher, hierarchy_level_labels
from treeseek.evaluation import metrics as M
from treeseek.evaluation.code_tuning import level_scales
from treeseek.evaluation.metrics import ideal_values
from treeseek.index import TreeIndex
from treeseek.io.files import atomic_write_json
from treeseek.model import TreeseekModel
from treeseek.search import Ranking

from common import BASE, DATASETS, markdown_table, synthetic_split, timed, train_test_features

TOP = 250


def scorer(y: np.ndarray, yq: np.ndarray, taxonomy):
    """mAP@10 and mAHP@250 of rankings given as database ids (the index's ids are the rows of X)."""
    counts = np.bincount(y, minlength=taxonomy.n_leaves)
    similarity = 1.0 - taxonomy.normalized_lca
    ideal = ideal_values(similarity, counts, TOP, leave_one_out=False)[yq]

    def score(ids: np.ndarray) -> dict:
        ranked = y[ids]
        relevant = ranked == yq[:, None]
        return {"map@10": float(np.nanmean(M.average_precision_at_k(relevant, counts[yq], 10))),
                "mahp@250": float(np.mean(M.average_hierarchical_precision(similarity[yq[:, None], ranked],
                                                                            ideal, TOP)))}
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=[*sorted(DATASETS), "synthetic"])
    parser.add_argument("--items", type=int, default=1_000_000, help="synthetic: database size")
    parser.add_argument("--trees", help="bench_trees.py JSON whose validation choice sets the model")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--rerank", type=int, default=1000, help="R: Hamming candidates re-ranked per query")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.dataset == "synthetic":
        return at_scale(args)
    names, X, y, Q, yq, taxonomy = train_test_features(args.dataset)
    params = dict(BASE)
    if args.trees:
        chosen = json.load(open(args.trees))["chosen"]
        params = {key: chosen[key] for key in ("variance", "max_components", "covariance", "hierarchy", "alpha",
                                               "temperature", "top_m")}
    model = TreeseekModel(**params).fit(X, y, names)
    index = TreeIndex(model)
    index.add(X, y)
    score = scorer(y, yq, taxonomy)
    print(f"model {params}; {len(Q)} queries, {len(X)} database items, top {TOP}, R = {args.rerank}", flush=True)

    rows = []
    for method in ("cosine", "combined", "soft"):
        (_, ids), seconds = timed(index.search, Q, TOP, ranking=Ranking(method))
        rows.append({"codes": "float (exact)", "ranking": method, "seconds": seconds, **score(ids)})
        print(json.dumps(rows[-1]), flush=True)
    check = np.arange(0, len(Q), max(1, len(Q) // 50))
    exact_soft = index.search(Q[check], TOP, ranking=Ranking("soft"))[0]

    levels = hierarchy_level_labels(taxonomy, y)
    hashers = {
        "ITQ": (ITQHasher(args.bits), None),
        "DCWH": (HPDHHasher(args.bits, epochs=args.epochs), levels[:1]),
        "HPDH (WordNet levels)": (HPDHHasher(args.bits, scales=level_scales(len(levels), 1.0), epochs=args.epochs),
                                  levels),
    }
    for position, (name, (hasher, hasher_levels)) in enumerate(hashers.items()):
        start = time.perf_counter()
        index.set_hasher(hasher.fit(X, hasher_levels))
        print(f"{name}: trained and encoded in {time.perf_counter() - start:.0f} s", flush=True)
        if position == 0:  # distances, not ids: FAISS scores in float32, so near-ties may swap
            every = index.search(Q[check], TOP, ranking=Ranking("hamming", rerank=len(X), rerank_method="soft"))[0]
            assert np.allclose(every, exact_soft, atol=1e-5), "re-ranking every item differs from the exact search"
            print(f"check: re-ranking all {len(X)} items equals the exact soft search on {len(check)} queries")
        for ranking, rerank in (("hamming", 0), ("combined", args.rerank), ("soft", args.rerank)):
            method = "combined" if ranking == "hamming" else ranking
            (_, ids), seconds = timed(index.search, Q, TOP, ranking=Ranking("hamming", rerank=rerank,
                                                                              rerank_method=method))
            rows.append({"codes": f"{name} {args.bits} bits", "ranking": ranking if not rerank else
                         f"top {rerank} re-ranked by {ranking}", "seconds": seconds, **score(ids)})
            print(json.dumps(rows[-1]), flush=True)

    reference = next(row for row in rows if row["codes"] == "float (exact)" and row["ranking"] == "soft")
    print()
    print(markdown_table(["codes", "ranking", "mAP@10", "mAHP@250", "ms per query", "time vs exact soft"],
                         [[row["codes"], row["ranking"], f"{row['map@10']:.3f}", f"{row['mahp@250']:.3f}",
                           f"{1000 * row['seconds'] / len(Q):.2f}", f"{row['seconds'] / reference['seconds']:.2f}×"]
                          for row in rows]))
    if args.json:
        atomic_write_json(args.json, {"dataset": args.dataset, "model": params, "bits": args.bits,
                                      "rerank": args.rerank, "top": TOP, "rows": rows})


def at_scale(args) -> None:
    X, Q, y, yq, fit_rows, class_names = synthetic_split(args.items // 100)
    model = TreeseekModel(max_components=128).fit(X[fit_rows], y[fit_rows], class_names)
    index = TreeIndex(model)
    _, add_seconds = timed(index.add, X, y)
    _, code_seconds = timed(index.set_hasher, ITQHasher(args.bits).fit(X[fit_rows]))
    k = 100
    _, build_seconds = timed(index.search, Q[:1], k)  # builds the inner-product index of the soft ranking
    (_, exact), exact_seconds = timed(index.search, Q, k)
    same_class = lambda ids: float(np.mean(y[ids] == yq[:, None]))  # noqa: E731
    results = {"n_database": len(X), "n_queries": len(Q), "dim": X.shape[1], "bits": args.bits, "k": k,
               "add_seconds": add_seconds, "codes_seconds": code_seconds, "soft_index_build_seconds": build_seconds,
               "exact_soft_seconds": exact_seconds, "exact_soft_precision@100": same_class(exact), "rows": []}
    print(json.dumps(results), flush=True)
    _, results["hnsw_build_seconds"] = timed(index.search, Q[:1], k, ranking=Ranking("hamming", hamming_index="hnsw"))
    for kind in ("flat", "hnsw"):
        for rerank in sorted({100, args.rerank, 10 * args.rerank}):
            _, hamming_seconds = timed(index.search, Q, rerank, ranking=Ranking("hamming", hamming_index=kind))
            reranked = Ranking("hamming", rerank=rerank, rerank_method="soft", hamming_index=kind)
            (_, ids), seconds = timed(index.search, Q, k, ranking=reranked)
            recall = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(exact, ids)])
            results["rows"].append({"hamming_index": kind, "rerank": rerank, "seconds": seconds,
                                    "hamming_search_seconds": hamming_seconds, "recall@100": float(recall),
                                    "precision@100": same_class(ids), "speedup_vs_exact_soft": exact_seconds / seconds})
            print(json.dumps(results["rows"][-1]), flush=True)
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
