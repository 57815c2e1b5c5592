"""How much of the flat-to-taxonomy gap each taxonomy-free tree closes (#31): visual, names, WordNet, both.

Run:  .venv/bin/python benchmarks/bench_lexical_trees.py caltech101 --json bench-output/lexical-caltech101.json
      .venv/bin/python benchmarks/bench_lexical_trees.py cifar10 --json bench-output/lexical-cifar10.json
      .venv/bin/python benchmarks/bench_lexical_trees.py fashion-mnist --json bench-output/lexical-fashion-mnist.json

The model (PCA 128, tied covariance) is fitted on the training split; every tree is average linkage over cosine
distances between class means, 16 levels, mixed with lexical distances between the classes where it says so
(``:names`` at 0.4, ``:wordnet=W``, ``:names+wordnet=W``), ranked with soft leaves (T = 4, alpha = 16, as in the
issue's probe) and scored on the test split: mAP@10 and mAHP@250 against the dataset's taxonomy. The gap closed is
(tree - flat) / (true taxonomy - flat), flat being the predicted class alone. The weight W that ``treeseek run``
would choose is the one with the best validation mAP@10 (no taxonomy), marked "chosen on validation"; the other
weights are shown too, so the test-split rows bound what any choice could reach. Also: how many class names
resolve in WordNet, and the domain they resolve in.
"""
from __future__ import annotations

import json

from treeseek.evaluation import evaluate_retrieval
from treeseek.evaluation.tuning import validation_split
from treeseek.hierarchy.builders import make_builder
from treeseek.hierarchy.lexical_prior import resolve_names
from treeseek.hierarchy.wordnet import noun_graph
from treeseek.io.features import FeatureSet
from treeseek.model import TreeseekModel

from common import BASE, DATASETS, SHARED, markdown_table, real_data_arguments, write_json

ALPHA, TEMPERATURE = 16.0, 4.0
WEIGHTS = (0.4, 0.7, 1.0)


def main() -> None:
    args, (names, X, y, Q, yq, taxonomy) = real_data_arguments(__doc__.splitlines()[0])
    graph = noun_graph()
    resolution = resolve_names(names, graph)
    print(f"WordNet: {resolution.coverage:.0%} of {len(names)} names resolved, domain "
          f"{graph.name(resolution.domain) if resolution.domain is not None else None}", flush=True)
    base = TreeseekModel(**BASE, temperature=TEMPERATURE).fit(X, y, names)
    is_val, val_rows = validation_split(y)
    fit_model = TreeseekModel(**BASE, temperature=TEMPERATURE).fit(X[~is_val], y[~is_val], names)
    Z, Z_fit = base.pca_.transform(X), fit_model.pca_.transform(X[~is_val])

    def scored(model, queries, database, method="soft") -> dict:
        result = evaluate_retrieval(model, queries, database, methods=[method], alpha=ALPHA, ks=(10,),
                                    taxonomy=taxonomy, progress=False, full_ranking=False)
        return {"map@10": result.metrics[method]["map@10"], "mahp@250": result.metrics[method]["mahp@250"]}

    test, train = FeatureSet(Q, yq, names), FeatureSet(X, y, names)
    validation = (FeatureSet(X[val_rows], y[val_rows], names), FeatureSet(X[~is_val], y[~is_val], names))
    rows = [{"tree": "flat (predicted class only)", **scored(base, test, train, "flat")}]
    taxonomy_path = str(SHARED / "hierarchies" / DATASETS[args.dataset]["taxonomy"])
    specs = ["average:16:cosine", "average:16:cosine:names"]
    specs += [f"average:16:cosine:{lexicon}={w:g}" for lexicon in ("wordnet", "names+wordnet") for w in WEIGHTS]
    for spec in [*specs, taxonomy_path]:
        builder = make_builder(spec).fit(Z, y, names)
        row = {"tree": "true taxonomy" if spec == taxonomy_path else spec,
               **scored(base.with_class_hierarchy(builder.hierarchy_), test, train)}
        if spec != taxonomy_path:
            on_fit = make_builder(spec).fit(Z_fit, y[~is_val], names)
            row["validation_map@10"] = scored(fit_model.with_class_hierarchy(on_fit.hierarchy_), *validation)["map@10"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    flat, full = rows[0]["mahp@250"], rows[-1]["mahp@250"]
    for row in rows:
        row["gap_closed"] = (row["mahp@250"] - flat) / (full - flat) if full - flat > 1e-4 else None
    for lexicon in ("wordnet", "names+wordnet"):
        family = [r for r in rows if r["tree"].startswith(f"average:16:cosine:{lexicon}=")]
        max(family, key=lambda r: r["validation_map@10"])["chosen"] = True
    print()
    print(markdown_table(["tree", "validation mAP@10", "test mAP@10", "test mAHP@250", "gap closed"],
                         [[r["tree"] + (" (chosen on validation)" if r.get("chosen") else ""),
                           f"{r['validation_map@10']:.4f}" if "validation_map@10" in r else "—",
                           f"{r['map@10']:.4f}", f"{r['mahp@250']:.4f}",
                           "—" if r["gap_closed"] is None else f"{r['gap_closed']:.0%}"] for r in rows]))
    write_json(args.json, {"dataset": args.dataset, "wordnet": resolution.describe(graph, names), "rows": rows})


if __name__ == "__main__":
    main()
