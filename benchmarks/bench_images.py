"""Real-data benchmark: retrieval quality of every method, and feature-extraction throughput.

Caltech-101 (EfficientNet-Lite0 features):
  .venv/bin/python benchmarks/bench_images.py caltech101 --json bench-output/caltech101.json
CIFAR-10 (ResNet-56 features):
  .venv/bin/python benchmarks/bench_images.py cifar10 --json bench-output/cifar10.json

Both unpack their data from ../shared into bench-output/. The model is fitted on
the training split, parameters are chosen on a validation split carved from it,
queries are the test split and the database is the training split.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from treeseek.embed.extraction import extract_features
from treeseek.evaluation import evaluate_retrieval
from treeseek.evaluation.tuning import select_parameters
from treeseek.hierarchy import load_taxonomy
from treeseek.io.features import FeatureSet
from treeseek.model import TreeseekModel

from common import DATASETS, SHARED, dataset_features, markdown_table, write_json

KS = (1, 5, 10, 20, 50, 100)


def forward_throughput(backbone, batch_size: int, repeats: int = 3, trials: int = 3) -> float:
    """Images/s of the network alone on random input at the extraction's batch size (best of ``trials``)."""
    x = torch.randn(batch_size, 3, backbone.input_size, backbone.input_size)
    best = 0.0
    with torch.inference_mode():
        backbone.network.features(x)
        for _ in range(trials):
            start = time.perf_counter()
            for _ in range(repeats):
                backbone.network.features(x)
            best = max(best, batch_size * repeats / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    spec = DATASETS[args.dataset]
    images, features, kept, stats, backbone = dataset_features(args.dataset, args.batch_size)
    names = images.class_names
    # Throughput on a fixed sample without the cache: decoding + preprocessing + forward, against forward alone.
    sample = images.subset(np.arange(len(images)) < 8 * args.batch_size)
    _, _, sample_stats = extract_features(backbone, sample, args.batch_size, None, progress=False)
    raw = forward_throughput(backbone, args.batch_size)
    train, test = images.splits == "train", images.splits == "test"
    X, y = features[train], images.labels[train]
    queries, database = FeatureSet(features[test], images.labels[test], names), FeatureSet(X, y, names)
    taxonomy = load_taxonomy(SHARED / "hierarchies" / spec["taxonomy"], names)

    started = time.perf_counter()
    selection = select_parameters(X, y, names)
    chosen = selection.params
    print(f"chosen on validation ({time.perf_counter() - started:.0f} s): {chosen}", flush=True)
    rows, shapes = {}, {}
    variants = (("visual", {**chosen, "hierarchy": "visual"}),
                ("WordNet taxonomy", {**chosen, "hierarchy": str(SHARED / "hierarchies" / spec["taxonomy"])}),
                ("Ward", {**chosen, "hierarchy": "ward"}),
                ("visual, defaults without search", {}))
    for label, params in variants:
        model = TreeseekModel(**params).fit(X, y, names)
        methods = ["cosine", "flat", "hierarchy", "combined"] if label == "visual" else ["combined"]
        result = evaluate_retrieval(model, queries, database, methods=methods, ks=KS, taxonomy=taxonomy, progress=False)
        for method in methods:
            name = f"{method} ({label})" if method in ("combined", "hierarchy") else method
            rows[name] = {**{f"map@{k}": result.metrics[method][f"map@{k}"] for k in KS},
                          "mahp@250": result.metrics[method]["mahp@250"]}
        shapes[label] = model.fit_info_["tree_shape"]
        if label == "visual":
            leaf_accuracy = result.info["query_leaf_accuracy"]
            pca_dim = model.fit_info_["pca_dim"]
    report = {
        "dataset": args.dataset, "backbone": spec["backbone"], "train": int(train.sum()), "test": int(test.sum()),
        "classes": len(names), "skipped": int((~kept).sum()),
        "extraction": {"images_per_second": sample_stats["images_per_second"], "sample": len(sample),
                       "raw_forward_images_per_second": raw, "batch_size": args.batch_size,
                       "threads": torch.get_num_threads()},
        "chosen": chosen, "pca_dim": pca_dim, "query_leaf_accuracy": leaf_accuracy, "tree_shapes": shapes,
        "metrics": rows,
    }
    print(markdown_table(["method", *(f"mAP@{k}" for k in KS), "mAHP@250"],
                         [[name, *(f"{values[f'map@{k}']:.3f}" for k in KS), f"{values['mahp@250']:.3f}"]
                          for name, values in rows.items()]))
    print(json.dumps({k: v for k, v in report.items() if k != "metrics"}, indent=1))
    write_json(args.json, report)


if __name__ == "__main__":
    main()
