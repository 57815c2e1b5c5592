"""How to weigh class names in a linkage tree (#7): the phrase and the weight, chosen on validation.

Run:  .venv/bin/python benchmarks/bench_name_trees.py caltech101 --json bench-output/name-trees-caltech101.json

The model (PCA 128, tied covariance, as in ``bench_trees.py``) is fitted on the fitting part of the
training split; each tree is average linkage over cosine distances between class means mixed with
distances between the class names (``LinkageHierarchyBuilder(names_weight=W, name_template=...)``),
16 levels, ranked with soft leaves (T = 4, alpha = 16), and scored by mAHP@250 against WordNet on the
validation split of ``select_ranking`` (25%, at most 2,000 queries). The test split is not used.
Weight 0 is the visual tree; the library's defaults are the best point here.
"""
from __future__ import annotations

import argparse
import json

from treeseek.evaluation import evaluate_retrieval
from treeseek.evaluation.tuning import validation_split
from treeseek.hierarchy.builders import LinkageHierarchyBuilder, lca_agreement
from treeseek.io.features import FeatureSet
from treeseek.io.files import atomic_write_json
from treeseek.model import TreeseekModel

from common import BASE, DATASETS, markdown_table, train_test_features

TEMPLATES = ("{}", "a photo of a {}.", "{} is a kind of", "What is a {}? It is a type of object or animal.")
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--json")
    parser.add_argument("--max-queries", type=int, default=2000)
    args = parser.parse_args()
    names, X, y, _, _, taxonomy = train_test_features(args.dataset)
    is_val, val_rows = validation_split(y, max_queries=args.max_queries)  # as select_ranking splits
    queries, database = FeatureSet(X[val_rows], y[val_rows]), FeatureSet(X[~is_val], y[~is_val])
    model = TreeseekModel(**BASE, temperature=4.0).fit(X[~is_val], y[~is_val], names)
    Z = model.pca_.transform(X[~is_val])
    rows = []
    for template in TEMPLATES:
        for weight in WEIGHTS:
            if weight == 0 and template != TEMPLATES[0]:
                continue  # the visual tree does not read the names
            builder = LinkageHierarchyBuilder("average", 16, BASE["covariance"], "cosine", weight,
                                              name_template=template).fit(Z, y[~is_val], names)
            model.hierarchy_ = builder.hierarchy_
            result = evaluate_retrieval(model, queries, database, methods=["soft"], alpha=16.0, ks=(10,),
                                        taxonomy=taxonomy, progress=False, full_ranking=False)
            row = {"template": template, "names_weight": weight,
                   "taxonomy_agreement": lca_agreement(builder.hierarchy_, taxonomy),
                   "mahp@250": result.metrics["soft"]["mahp@250"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(markdown_table(["phrase", "weight", "agreement with WordNet", "validation mAHP@250"],
                         [["- (visual only)" if r["names_weight"] == 0 else f'"{r["template"]}"',
                           f"{r['names_weight']:g}", f"{r['taxonomy_agreement']:.2f}", f"{r['mahp@250']:.4f}"]
                          for r in rows]))
    best = max(rows, key=lambda r: r["mahp@250"])
    print(f"\nbest on validation: \"{best['template']}\", weight {best['names_weight']:g} "
          f"(mAHP@250 {best['mahp@250']:.4f})")
    if args.json:
        atomic_write_json(args.json, {"dataset": args.dataset, "base": BASE, "rows": rows, "best": best})


if __name__ == "__main__":
    main()
