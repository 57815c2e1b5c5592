"""How many classes each posterior keeps (``top_m``): the soft ranking's quality on real data, chosen on validation.

Run:  .venv/bin/python benchmarks/bench_soft_width.py caltech101 cifar10 --json bench-output/soft-width.json

The soft ranking stores each item's posterior over its m most probable classes (#27): that bounds its memory
and lets the search skip whole groups. Per dataset, the training split is cut into a fitting part (80% of
each class) and a validation part (the rest, the queries); the default model (PCA to at most 128 dimensions,
tied covariance, the default tree and temperature) is fitted on the fitting part, which is also the database.
Every m is scored by mAP@10 and mAHP@250 (WordNet taxonomy) of the soft ranking at the model's alpha.
"""
from __future__ import annotations

import argparse

import numpy as np

from treeseek.evaluation import evaluate_retrieval
from treeseek.io.features import FeatureSet
from treeseek.model import TreeseekModel

from common import BASE, markdown_table, train_test_features, write_json

WIDTHS = (1, 2, 4, 8, 16, 32, None)


def validation_split(labels: np.ndarray, share: float = 0.2, seed: int = 0) -> np.ndarray:
    """Rows held out for validation: ``share`` of each class, drawn at random."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        held[rng.choice(rows, max(1, int(round(share * len(rows)))), replace=False)] = True
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--json")
    args = parser.parse_args()
    results, rows = {}, []
    for dataset in args.datasets:
        names, X, y, _, _, taxonomy = train_test_features(dataset)
        held = validation_split(y)
        model = TreeseekModel(**BASE).fit(X[~held], y[~held], names)
        queries, database = FeatureSet(X[held], y[held], names), FeatureSet(X[~held], y[~held], names)
        for width in WIDTHS:
            model.top_m = width
            result = evaluate_retrieval(model, queries, database, methods=["soft"], ks=(10,), taxonomy=taxonomy,
                                        progress=False, full_ranking=False)
            scores = {key: float(result.metrics["soft"][key]) for key in ("map@10", "mahp@250")}
            results.setdefault(dataset, {})[str(width)] = scores
            rows.append([dataset, len(names), "all" if width is None else width, f"{scores['map@10']:.4f}",
                         f"{scores['mahp@250']:.4f}"])
            print(rows[-1], flush=True)
    print(markdown_table(["dataset", "classes", "m (top_m)", "validation mAP@10", "validation mAHP@250"], rows))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
