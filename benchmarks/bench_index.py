"""Index at scale: build, open, memory, queries/s and recall@100 for every backend, against a brute-force scan.

Run:  .venv/bin/python benchmarks/bench_index.py                  (100k, 1M and 10M: the README's table)
      .venv/bin/python benchmarks/bench_index.py --sizes 100k    (one size)
      .venv/bin/python benchmarks/bench_index.py --small         (a quick smoke run)

Each size runs in its own process, so resident memory is that size's alone.
Features are synthetic with a planted 10 x 10 x 10 class hierarchy (1,000
leaves; the model ranks with that taxonomy) at the dimension of real backbone features; within a class they vary
along a few directions with decaying spread plus a little isotropic noise, as
CNN features do. The first competitor, plain FAISS flat over the same unit vectors (cosine, float32, the
same threads), and the exactness reference, a brute-force scan of the combined distance over every item in
float64, run in the same process on the same index. The backends are timed in their level-by-level search;
the first combined row is what ``TreeIndex.search`` does on the exact backend, the group search.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from treeseek.hierarchy import save_hierarchy
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.index import TreeIndex
from treeseek.model import TreeseekModel
from treeseek.search import Ranking, make_backend
from treeseek.search.distances import hierarchy_weight, method_hierarchy, normalize_rows
from treeseek.search.hierarchical_index import hierarchical_topk
from treeseek.search.topk import merge_smallest_k

from common import markdown_table, rss_mb, timed

CONFIGS = {
    "100k": {"n": 100_000, "dim": 1280, "dtype": "float32", "queries": 1000, "brute_queries": 1000,
             "backends": {"exact": {}, "faiss-flat": {}, "faiss-ivf": {"nprobe": [16, 64]},
                          "faiss-hnsw": {"m": 32, "ef_search": [128, 512]}}},
    "1M": {"n": 1_000_000, "dim": 256, "dtype": "float32", "queries": 1000, "brute_queries": 300,
           "backends": {"exact": {}, "faiss-flat": {}, "faiss-ivf": {"nlist": 1024, "nprobe": [16, 64]},
                        "faiss-hnsw": {"m": 32, "ef_search": [128, 512]}}},
    "10M": {"n": 10_000_000, "dim": 128, "dtype": "float16", "queries": 1000, "brute_queries": 100,
            "backends": {"exact": {}, "faiss-ivf": {"nlist": 1024, "nprobe": [16, 64]}}},
    "small": {"n": 30_000, "dim": 128, "dtype": "float32", "queries": 100, "brute_queries": 100,
              "backends": {"exact": {}, "faiss-flat": {}, "faiss-ivf": {"nprobe": [16, 64]},
                        "faiss-hnsw": {"m": 32, "ef_search": [128, 512]}}},
}
K = 100
ALPHA = 1.0
# A list as a parameter value is a sweep of a search-time setting: the structure is built once.


class PlantedStream:
    """Class means from a planted hierarchy; within-class spread on a few directions, decaying."""

    def __init__(self, dim: int, branching=(10, 10, 10), rank: int = 12, seed: int = 0):
        planted = planted_hierarchy(branching, dim, samples_per_class=1, scale=3.0, noise=0.0, offset=4.0, seed=seed)
        self.means, self.tree, self.names = planted.features.astype(np.float64), planted.hierarchy, planted.class_names
        rng = np.random.default_rng(seed + 1)
        self.basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T
        self.spread = 1.0 / np.sqrt(np.arange(1, rank + 1))
        self.dim = dim

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, len(self.means), n)
        X = self.means[labels] + (rng.standard_normal((n, len(self.spread))) * self.spread) @ self.basis
        X += 0.03 * rng.standard_normal((n, self.dim))
        return X.astype(np.float32), labels


def brute_force(segment, tree, weight, unit_queries, query_leaves, k, item_chunk=1 << 16, query_chunk=256):
    """The naive method: the combined distance to every item in float64, then the k smallest."""
    lca = tree.normalized_lca
    best_d = np.full((len(unit_queries), k), np.inf)
    best_i = np.full((len(unit_queries), k), -1, dtype=np.int64)
    for first in range(0, len(segment), item_chunk):
        X = np.asarray(segment.vectors[first : first + item_chunk], dtype=np.float64)  # converted once per chunk
        leaves, ids = segment.leaves[first : first + item_chunk], segment.ids[first : first + item_chunk]
        for q0 in range(0, len(unit_queries), query_chunk):
            rows = slice(q0, q0 + query_chunk)
            keys = np.clip(1.0 - unit_queries[rows] @ X.T, 0.0, 2.0)
            if weight:
                keys += weight * lca[np.ix_(query_leaves[rows], leaves)]
            best_d[rows], best_i[rows] = merge_smallest_k(best_d[rows], best_i[rows], keys, ids, k)
    return best_d, best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(found, truth)]))


def run_config(name: str, workdir: Path) -> dict:
    config = CONFIGS[name]
    n, dim, dtype = config["n"], config["dim"], config["dtype"]
    stream = PlantedStream(dim)
    result = {"size": name, "n": n, "dim": dim, "dtype": dtype, "k": K, "alpha": ALPHA,
              "leaves": len(stream.names)}
    base_rss = rss_mb()

    fit_x, fit_y = stream.sample(100 * len(stream.names), seed=1)
    taxonomy = workdir / "planted.json"
    save_hierarchy(stream.tree, taxonomy)
    model, t_fit = timed(TreeseekModel(hierarchy=str(taxonomy), max_components=64, alpha=ALPHA).fit, fit_x, fit_y,
                         stream.names)
    result["fit_seconds"] = round(t_fit, 1)
    result["tree_shape"] = model.fit_info_["tree_shape"]
    del fit_x, fit_y

    index = TreeIndex(model, dtype=dtype)
    start = time.perf_counter()
    chunk = 500_000
    for first in range(0, n, chunk):
        X, _ = stream.sample(min(chunk, n - first), seed=100 + first // chunk)
        index.add(X)
        print(f"  {name}: added {first + len(X):,}", file=sys.stderr, flush=True)
    directory = workdir / f"index-{name}"
    index.save(directory)
    result["build_seconds_exact_index"] = round(time.perf_counter() - start, 1)
    result["bytes_on_disk"] = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    del index, X

    opens = []
    for _ in range(3):
        index, seconds = timed(TreeIndex.open, directory)
        opens.append(seconds)
    result["open_seconds"] = round(min(opens), 3)
    result["rss_mb_after_open"] = round(rss_mb() - base_rss)

    model = index.model  # the segments are laid out by the opened model's tree
    Q, _ = stream.sample(config["queries"], seed=7)
    query_leaves = model.assign(Q)
    unit = normalize_rows(Q)
    segment = index.segments_[0].segment
    nb = config["brute_queries"]
    methods = {}
    for method in ("combined", "cosine"):
        tree = method_hierarchy(method, model.hierarchy_)
        weight = hierarchy_weight(method, ALPHA, tree)
        (_, brute_ids), t_brute = timed(brute_force, segment, tree, weight, unit[:nb], query_leaves[:nb], K)
        methods[method] = {"tree": tree, "weight": weight, "brute_ids": brute_ids, "brute_qps": nb / t_brute}
        print(f"  {name} brute force {method}: {nb / t_brute:.1f} q/s", file=sys.stderr, flush=True)
    # the first competitor: plain FAISS flat over the same unit vectors (cosine, float32, the same threads)
    flat = faiss.IndexFlatIP(dim)
    for first in range(0, n, 1 << 20):
        flat.add(np.ascontiguousarray(segment.vectors[first : first + (1 << 20)], dtype=np.float32))
    _, t_faiss = timed(flat.search, unit.astype(np.float32), K)
    result["faiss_flat_queries_per_second"] = faiss_qps = len(Q) / t_faiss
    flat = None
    rows = []
    # what TreeIndex.search does for combined on the exact backend: the group search (#27)
    (_, ids), t_group = timed(index.search, Q, K, ranking=Ranking("combined", alpha=ALPHA))
    assert np.array_equal(ids[:nb], methods["combined"]["brute_ids"]), "the group search must equal the scan"
    rows.append({"method": "combined", "backend": "exact (group search, TreeIndex.search)", "params": {},
                 "build_seconds": 0.0, "structure_mb": 0, "rss_mb": round(rss_mb() - base_rss),
                 "queries_per_second": round(len(Q) / t_group, 1), "recall@100": 1.0,
                 "speedup_vs_faiss_flat": round(len(Q) / t_group / faiss_qps, 2),
                 "speedup_vs_brute_force": round(len(Q) / t_group / methods["combined"]["brute_qps"], 1),
                 "throughput_vs_exact": None,
                 "brute_force_queries_per_second": round(methods["combined"]["brute_qps"], 2)})
    for backend_name, params in config["backends"].items():  # each structure is built once, for both methods
        sweep = {key: value for key, value in params.items() if isinstance(value, list)}
        fixed = {key: value for key, value in params.items() if key not in sweep}
        before = rss_mb()
        backend, t_build = timed(make_backend(backend_name, **fixed).build, segment)
        structure_mb = rss_mb() - before
        settings = [{}] if not sweep else [{key: value} for key, values in sweep.items() for value in values]
        for setting, (method, m) in ((s, mm) for s in settings for mm in methods.items()):
            backend.params.update(setting)
            (_, ids, _), t_search = timed(hierarchical_topk, segment, backend, m["tree"], m["weight"], unit,
                                          query_leaves, K)
            qps = len(Q) / t_search
            if backend_name == "exact":
                m["exact_ids"], m["exact_qps"] = ids, qps
                assert np.array_equal(ids[:nb], m["brute_ids"]), "the exact index must equal the brute-force scan"
            rows.append({
                "method": method, "backend": backend_name, "params": dict(backend.params),
                "build_seconds": round(t_build, 1), "structure_mb": round(max(structure_mb, 0.0)),
                "rss_mb": round(rss_mb() - base_rss), "queries_per_second": round(qps, 1),
                "recall@100": round(recall(ids, m["exact_ids"]), 4),
                "speedup_vs_faiss_flat": round(qps / faiss_qps, 2),
                "speedup_vs_brute_force": round(qps / m["brute_qps"], 1),
                "throughput_vs_exact": round(qps / m["exact_qps"], 2),
                "brute_force_queries_per_second": round(m["brute_qps"], 2),
            })
            print(f"  {name} {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
        del backend
    rows.sort(key=lambda row: row["method"] != "combined")  # stable: the group search stays first
    result["rows"] = rows
    return result


def markdown(results: list[dict]) -> str:
    def label(row: dict) -> str:
        setting = {k: v for k, v in row["params"].items() if k in ("nprobe", "ef_search")}
        return row["backend"] + "".join(f" {k}={v}" for k, v in setting.items())

    faiss_rows = [[r["size"], r["dim"], "float32", "cosine", "plain FAISS flat (IndexFlatIP)", 0.0, "—",
                   round(r["faiss_flat_queries_per_second"], 1), 1.0, 1.0, "—", "—"] for r in results]
    searches = markdown_table(
        ["N", "d", "dtype", "method", "backend", "build s", "RSS MB", "q/s", "recall@100", "× FAISS flat",
         "× brute force", "× exact (level by level)"],
        [row for r, first in zip(results, faiss_rows) for row in [first] + [
            [r["size"], r["dim"], r["dtype"], row["method"], label(row), row["build_seconds"], row["rss_mb"],
             row["queries_per_second"], row["recall@100"], row["speedup_vs_faiss_flat"],
             row["speedup_vs_brute_force"], "—" if row["throughput_vs_exact"] is None else row["throughput_vs_exact"]]
            for row in r["rows"]]])
    opening = markdown_table(
        ["N", "open s", "RSS after open MB", "on disk GB", "exact index build s", "tree"],
        [[r["size"], r["open_seconds"], r["rss_mb_after_open"], f"{r['bytes_on_disk'] / 1e9:.2f}",
          r["build_seconds_exact_index"], r["tree_shape"]] for r in results])
    return searches + "\n\n" + opening


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1M,10M", help="comma-separated: 100k, 1M, 10M")
    parser.add_argument("--small", action="store_true", help="a 30k smoke run")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--workdir", help="where the indexes are written (default: a temporary directory)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one size in this process (used by the driver)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_config(args.one, Path(args.workdir))))
        return
    sizes = ["small"] if args.small else [s.strip() for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        for size in sizes:
            print(f"{size} ...", file=sys.stderr, flush=True)
            done = subprocess.run([sys.executable, __file__, "--one", size, "--workdir", workdir],
                                  stdout=subprocess.PIPE, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    machine = f"{platform.processor() or platform.machine()}, numpy {np.__version__}"
    print(json.dumps({"machine": machine, "results": results}, indent=2))
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
