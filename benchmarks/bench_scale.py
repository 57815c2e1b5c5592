"""The default rankings at scale (#27): soft and combined against plain FAISS flat, from 100k to 4M items.

Run:  .venv/bin/python benchmarks/bench_scale.py --json bench-output/scale.json --plot docs/scale.png
      .venv/bin/python benchmarks/bench_scale.py --items 100000 --queries 200     (a quick run)

Data: 1,000 classes under a planted 10 x 10 x 10 tree in 256 dimensions (class means as in
``treeseek.hierarchy.synthetic``, Gaussian noise), database and queries drawn independently. The model is
the default ``TreeseekModel()`` fitted on 100 items per class. Per size, in one process, back to back:

* plain FAISS ``IndexFlatIP`` over the unit vectors (float32): the first competitor, cosine without a tree;
* treeseek ``TreeIndex`` (exact backend) with ``soft`` and ``combined`` top-k, float32 storage at every size
  (as FAISS's), and float16 storage too at the sizes of ``--float16`` (4M: half the memory; the soft ranking's
  posteriors are unchanged, and the build converts every row);
* a float64 full scan of each distance over every item: the exactness reference (its ids are asserted equal
  to treeseek's on the first queries, and its speed reported).

Batched: all queries in one call; single: one query per call. The searches take turns (FAISS, soft,
combined), batched ``--repeats`` times and then in as many blocks of single queries, and each reports its
median, so that a slower moment of a shared machine falls on all of them alike. The first batch after
opening the index also pages its vectors in and joins its groups into tiles: it is reported apart. Every
measurement uses the same threads (the machine's cores, FAISS's OpenMP and BLAS alike); q/s is wall clock,
"CPU" the process CPU time.
Build, each timed alone and in turns, the fastest of up to five (no further turn once the builds so far took
five minutes in all; the JSON keeps the count): treeseek's add + sort (the index searchable in memory; writing
it is reported apart) against what a cosine user does with FAISS, ``faiss.normalize_L2`` on a float32 copy and
``add`` (in chunks of 65,536 rows), plus the model's posteriors computed once (``TreeseekModel.place``, as
treeseek's build calls it).
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.index import TreeIndex
from treeseek.model import TreeseekModel
from treeseek.search import Ranking
from treeseek.search.distances import normalize_rows
from treeseek.search.topk import smallest_k

from common import OUTPUT, markdown_table, peak_rss_gb, rss_mb, timed, write_json

DIM, BRANCHING, NOISE, SCALE = 256, (10, 10, 10), 0.3, 4.0
CHUNK = 1 << 16
METHODS = ("soft", "combined")
BUILD_SECONDS = 300  # builds are repeated (up to --build-repeats) while they took less than this in all


def class_means(seed: int = 27) -> tuple[np.ndarray, object]:
    planted = planted_hierarchy(BRANCHING, DIM, 1, scale=SCALE, noise=0.0, seed=seed, dtype=np.float64)
    return planted.features, planted


def draw(means: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n float32 rows: a random class's mean plus Gaussian noise, generated in chunks."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(means), n)
    out = np.empty((n, means.shape[1]), dtype=np.float32)
    for first in range(0, n, CHUNK):
        rows = slice(first, first + CHUNK)
        out[rows] = means[labels[rows]] + NOISE * rng.standard_normal((len(out[rows]), means.shape[1]),
                                                                      dtype=np.float32)
    return out, labels


def faiss_units(rows: np.ndarray) -> np.ndarray:
    """Unit rows as a FAISS cosine user makes them: a float32 copy, normalised in place by FAISS."""
    rows = np.array(rows, dtype=np.float32)
    faiss.normalize_L2(rows)
    return rows


def cpu_and_wall(function, *args, **kwargs):
    cpu, wall = time.process_time(), time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.process_time() - cpu, time.perf_counter() - wall


def reference_topk(model: TreeseekModel, unit_items: np.ndarray, item_posteriors, Q: np.ndarray, k: int,
                   method: str, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The float64 full scan: every item's D, then a stable full sort (ties by id)."""
    lca = model.hierarchy_.normalized_lca
    unit_q = normalize_rows(Q)
    if method == "soft":
        _, classes, weights = model.place(Q)
        heights = np.zeros((len(Q), model.n_classes_))
        for column in range(classes.shape[1]):
            heights += weights[:, column, None] * lca[classes[:, column]]
    else:
        heights = lca[model.assign(Q)]
    best = None
    for first in range(0, len(unit_items), CHUNK):
        rows = slice(first, first + CHUNK)
        keys = np.clip(1.0 - unit_q @ np.asarray(unit_items[rows], np.float64).T, 0.0, 2.0)
        if method == "soft":
            classes, weights = item_posteriors
            for column in range(classes.shape[1]):
                keys += alpha * heights[:, np.asarray(classes[rows, column], np.int64)] * \
                    np.asarray(weights[rows, column], np.float64)
        else:
            keys += alpha * heights[:, item_posteriors[rows]]
        ids = np.arange(first, first + keys.shape[1])
        part = smallest_k(keys, ids, k)
        best = part if best is None else smallest_k(np.hstack([best[0], part[0]]), np.hstack([best[1], part[1]]), k)
    return best


def stored_by_id(index: TreeIndex):
    """Unit vectors, leaves and sparse posteriors of every item in id order (for the reference scan)."""
    stored = index.stored_segments()[0]
    order = np.argsort(stored.segment.ids)
    return (stored.segment.vectors[order], stored.segment.leaves[order],
            (stored.soft.classes[order], stored.soft.weights[order]))


def measure(n: int, dtype: str, model: TreeseekModel, means: np.ndarray, Q: np.ndarray, args, workdir: Path) -> dict:
    X, _ = draw(means, n, seed=n)
    row = {"items": n, "dtype": dtype, "raw_float32_gb": X.nbytes / 1e9}
    # Each build timed alone, in turns, the fastest of up to ``--build-repeats`` (fewer where they take long):
    # treeseek's add + sort, the index searchable in memory (then saved, and dropped), against what a cosine
    # user does with FAISS (normalise a float32 copy in place and add it, in chunks so that no second copy of
    # every row is held at once) plus the model's posteriors computed once, which treeseek's build includes
    folder = workdir / f"index-{n}-{dtype}"
    builds, competitors = [], []
    while len(builds) < args.build_repeats and (not builds or sum(builds) + sum(c[0] for c in competitors) < BUILD_SECONDS):
        flat = index = None
        gc.collect()
        started = time.perf_counter()
        index = TreeIndex(model, dtype=dtype)
        index.add(X)
        index.stored_segments()
        builds.append(time.perf_counter() - started)
        if len(builds) == 1:
            _, row["save_s"] = timed(index.save, folder)
        index = None
        gc.collect()
        flat = faiss.IndexFlatIP(DIM)
        started = time.perf_counter()
        for first in range(0, n, CHUNK):
            flat.add(faiss_units(X[first : first + CHUNK]))
        faiss_add = time.perf_counter() - started
        _, posteriors = timed(lambda: [model.place(X[i : i + CHUNK]) for i in range(0, n, CHUNK)])
        competitors.append((faiss_add + posteriors, faiss_add, posteriors))
    row["treeseek_build_s"], row["build_repeats"] = min(builds), len(builds)
    _, row["faiss_add_s"], row["posteriors_once_s"] = min(competitors)
    X = None
    gc.collect()
    rss_before = rss_mb()  # FAISS's index is held: what follows is treeseek's opened index and its searches
    index, row["open_s"] = timed(TreeIndex.open, folder)
    soft = index.stored_segments()[0].soft
    row["soft_structure_gb"] = soft.nbytes / 1e9
    row["soft_memory_ratio"] = soft.nbytes / row["raw_float32_gb"] / 1e9
    searches = {"faiss": lambda q: flat.search(faiss_units(q), args.k)}
    for method in METHODS:
        searches[method] = lambda q, ranking=Ranking(method): index.search(q, args.k, ranking=ranking)
        # the first batch after opening also pages the vectors in and joins the groups into tiles: reported apart
        _, _, row[f"{method}_first_batch_s"] = cpu_and_wall(searches[method], Q)
    # Batched, then one query at a time: every search in turn, repeated, the median of each, so that a slower
    # moment of a shared machine falls on all of them alike
    walls, cpus = {name: [] for name in searches}, {name: [] for name in searches}
    for _ in range(args.repeats):
        for name, search in searches.items():
            _, cpu, wall = cpu_and_wall(search, Q)
            walls[name].append(wall)
            cpus[name].append(cpu)
    # one at a time: in blocks of queries per search (alternating query by query would leave each search the
    # other's idle threads still spinning: OpenMP's after FAISS, BLAS's after treeseek)
    single_walls, single_cpus = {name: [] for name in searches}, {name: [] for name in searches}
    for block in np.array_split(np.arange(args.single), args.repeats):
        for name, search in searches.items():
            for query in block:
                _, cpu, wall = cpu_and_wall(search, Q[query : query + 1])
                single_walls[name].append(wall * 1e3)
                single_cpus[name].append(cpu * 1e3)
    row["rss_after_search_mb"] = rss_mb() - rss_before
    for name in searches:
        row[f"{name}_qps"] = len(Q) / np.median(walls[name])
        row[f"{name}_cpu_ms"] = np.median(cpus[name]) / len(Q) * 1e3
        row[f"{name}_single_ms"] = np.median(single_walls[name])
        row[f"{name}_single_cpu_ms"] = np.median(single_cpus[name])
    flat = None
    unit_items, leaves, posteriors = stored_by_id(index)
    checked = Q[: args.checked]
    for method in METHODS:
        _, ids = index.search(checked, args.k, ranking=Ranking(method))
        (_, expected), seconds = timed(reference_topk, model, unit_items, posteriors if method == "soft" else leaves,
                                       checked, args.k, method, model.alpha)
        row[f"{method}_exact"] = bool(np.array_equal(ids, expected))
        row[f"{method}_reference_qps"] = len(checked) / seconds
    index = unit_items = None
    shutil.rmtree(folder)
    return row


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    half = [r for r in rows if r["dtype"] == "float16"]
    rows = [r for r in rows if r["dtype"] == "float32"]
    sizes = [r["items"] for r in rows]
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, style in (("soft_qps", "treeseek soft", "o-"), ("combined_qps", "treeseek combined", "s-"),
                              ("faiss_qps", "plain FAISS flat (cosine)", "^--"),
                              ("soft_reference_qps", "float64 full scan (soft)", "x:")):
        speed.plot(sizes, [r[key] for r in rows], style, label=label)
    for key, label, marker in (("soft_qps", "treeseek soft, float16", "o"),
                               ("combined_qps", "treeseek combined, float16", "s")):
        if half:
            speed.plot([r["items"] for r in half], [r[key] for r in half], marker, fillstyle="none", label=label)
    speed.set(xscale="log", yscale="log", xlabel="items", ylabel="queries per second (batched, 2 cores)",
              title="Top-100 search speed")
    speed.legend(fontsize=8)
    memory.plot(sizes, [r["raw_float32_gb"] for r in rows], "^--", label="raw float32 vectors (FAISS flat)")
    memory.plot(sizes, [r["soft_structure_gb"] for r in rows], "o-", label="treeseek soft structure")
    memory.set(xscale="log", yscale="log", xlabel="items", ylabel="GB", title="Memory")
    memory.legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def report(rows: list[dict]) -> None:
    header = ["items", "storage", "ranking", "q/s batched", "× FAISS", "one query (ms)", "× FAISS", "exact ids",
              "build (s)", "save (s)", "open (s)", "first batch (s)"]
    lines = []
    for r in rows:
        size = f"{r['items'] // 1000}k" if r["items"] < 1_000_000 else f"{r['items'] // 1_000_000}M"
        lines.append([size, "float32", "plain FAISS flat", f"{r['faiss_qps']:.0f}", "1.00",
                      f"{r['faiss_single_ms']:.1f}", "1.00", "—", f"{r['faiss_add_s'] + r['posteriors_once_s']:.1f}*",
                      "—", "—", "—"])
        for method in ("soft", "combined"):
            lines.append([size, r["dtype"], f"treeseek {method}", f"{r[f'{method}_qps']:.0f}",
                          f"{r[f'{method}_qps'] / r['faiss_qps']:.2f}", f"{r[f'{method}_single_ms']:.1f}",
                          f"{r['faiss_single_ms'] / r[f'{method}_single_ms']:.2f}",
                          "yes" if r[f"{method}_exact"] else "NO", f"{r['treeseek_build_s']:.1f}",
                          f"{r['save_s']:.1f}", f"{r['open_s']:.2f}", f"{r[f'{method}_first_batch_s']:.2f}"])
            lines.append([size, "float64", f"full scan ({method})", f"{r[f'{method}_reference_qps']:.1f}",
                          f"{r[f'{method}_reference_qps'] / r['faiss_qps']:.2f}", "—", "—", "reference", "—", "—", "—", "—"])
    print(markdown_table(header, lines))
    print()
    memory = [[r["items"], r["dtype"], f"{r['raw_float32_gb']:.2f}", f"{r['soft_structure_gb']:.3f}",
               f"{r['soft_memory_ratio']:.3f}", f"{r['rss_after_search_mb']:.0f}"] for r in rows]
    print(markdown_table(["items", "storage", "raw float32 (GB)", "soft structure (GB)", "ratio",
                          "RSS after open + searches (MB)"], memory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000, 4_000_000])
    parser.add_argument("--float16", type=int, nargs="*", default=[4_000_000],
                        help="sizes also measured with float16 storage (each a row of its own)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--repeats", type=int, default=3, help="batched searches of each kind (the median counts)")
    parser.add_argument("--build-repeats", type=int, default=5,
                        help="builds of each kind at most, while they take under 5 minutes (the fastest counts)")
    parser.add_argument("--checked", type=int, default=50, help="queries checked against the float64 full scan")
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args()
    threads = os.cpu_count()
    faiss.omp_set_num_threads(threads)
    means, planted = class_means()
    fit_X, fit_y = draw(means, 100 * len(means), seed=1)
    model, fit_s = timed(TreeseekModel().fit, fit_X, fit_y, planted.class_names)
    Q, _ = draw(means, args.queries, seed=2)
    print(f"model fitted in {fit_s:.0f} s on {len(fit_X)} items: {model.fit_info_}", flush=True)
    rows = []
    OUTPUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUTPUT) as workdir:
        for n in args.items:
            for dtype in ("float32", "float16") if n in args.float16 else ("float32",):
                rows.append(measure(n, dtype, model, means, Q, args, Path(workdir)))
                print(rows[-1], flush=True)
    report(rows)
    print(f"peak RSS {peak_rss_gb():.1f} GB; {threads} threads")
    write_json(args.json, {"threads": threads, "k": args.k, "queries": args.queries, "repeats": args.repeats,
                           "single": args.single, "rows": rows,
                           "model": model.get_params(), "noise": NOISE, "scale": SCALE})
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
