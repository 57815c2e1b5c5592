"""Does a wider α grid help the soft ranking on Caltech-101 (#7)? A diagnostic on the test split.

Run:  .venv/bin/python benchmarks/bench_trees_alpha.py caltech101 --json bench-output/trees-alpha-caltech101.json

``bench_trees.py`` chose α = 16, the largest value of its validation grid. This scores the two best
average-linkage trees with soft leaves at T = 4, 16, 64 and α from 16 to 512 on the test split
(queries: test, database: training split; mAHP@250 against WordNet), to see whether the grid's edge
is what limits the gap closed. It selects nothing: the test split only answers that question.
"""
from __future__ import annotations

import argparse
import json

from treeseek.evaluation import evaluate_retrieval
from treeseek.io.features import FeatureSet
from treeseek.io.files import atomic_write_json
from treeseek.model import TreeseekModel

from common import BASE, DATASETS, markdown_table, train_test_features

TREES = ("average:8:cosine", "average:16:cosine")
TEMPERATURES = (4, 16, 64)
ALPHAS = (16, 32, 64, 128, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--json")
    args = parser.parse_args()
    names, X, y, Q, yq, taxonomy = train_test_features(args.dataset)
    queries, database = FeatureSet(Q, yq, names), FeatureSet(X, y, names)
    rows = []
    for hierarchy in TREES:
        model = TreeseekModel(**BASE, hierarchy=hierarchy).fit(X, y, names)
        for temperature in TEMPERATURES:
            model.temperature = temperature
            for alpha in ALPHAS:
                result = evaluate_retrieval(model, queries, database, methods=["soft"], alpha=alpha, ks=(10,),
                                            taxonomy=taxonomy, progress=False, full_ranking=False)
                metrics = result.metrics["soft"]
                rows.append({"hierarchy": hierarchy, "temperature": temperature, "alpha": alpha,
                             "map@10": metrics["map@10"], "mahp@250": metrics["mahp@250"]})
                print(json.dumps(rows[-1]), flush=True)
    print()
    print(markdown_table(["tree", "T", *(f"α = {alpha}" for alpha in ALPHAS)],
                         [[hierarchy, temperature, *(f"{r['mahp@250']:.3f}" for r in rows if r["hierarchy"] == hierarchy
                                                     and r["temperature"] == temperature)]
                          for hierarchy in TREES for temperature in TEMPERATURES]))
    if args.json:
        atomic_write_json(args.json, {"dataset": args.dataset, "base": BASE, "rows": rows})


if __name__ == "__main__":
    main()
