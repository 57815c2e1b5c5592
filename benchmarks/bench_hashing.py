"""Hashing benchmark: mAP, mAHP@250 and nDCG of binary codes at 16-64 bits, with training times.

Run:  .venv/bin/python benchmarks/bench_hashing.py caltech101 --json bench-output/hashing-caltech101.json
      .venv/bin/python benchmarks/bench_hashing.py cifar10 --json bench-output/hashing-cifar10.json

Protocol of HPDH: queries are the test split, the database is the train split; codes are trained on
the train split's frozen backbone features (the same features as bench_images.py, from its cache).
Methods: HPDH with the WordNet taxonomy's levels, HPDH with the levels of the visual hierarchy that
treeseek learns (cut by height), the single-level version (DCWH), ITQ and sign-of-PCA, and the float
features ranked by cosine distance. Metrics use the WordNet taxonomy.
"""
from __future__ import annotations

import argparse
import json
import time

from bench_images import DATASETS, SHARED, dataset_features

from treeseek.hashing import HPDHHasher, ITQHasher, SignPCAHasher, hierarchy_level_labels
from treeseek.hashing.evaluation import evaluate_codes, evaluate_distances
from treeseek.hierarchy import load_taxonomy
from treeseek.model import TreeseekModel
from treeseek.search import cosine_distances

BITS = (16, 32, 48, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--json")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--bits", default=",".join(map(str, BITS)))
    args = parser.parse_args()
    images, features, _, _, _ = dataset_features(args.dataset)
    names = images.class_names
    train, test = images.splits == "train", images.splits == "test"
    X, y, Q, yq = features[train], images.labels[train], features[test], images.labels[test]
    taxonomy = load_taxonomy(SHARED / "hierarchies" / DATASETS[args.dataset]["taxonomy"], names)
    visual = TreeseekModel().fit(X, y, names).hierarchy_
    levels = {"taxonomy": hierarchy_level_labels(taxonomy, y), "visual": hierarchy_level_labels(visual, y)}
    print(f"levels: taxonomy {[int(l.max()) + 1 for l in levels['taxonomy']]}, "
          f"visual {[int(l.max()) + 1 for l in levels['visual']]}", flush=True)
    rows = [{"method": "float features (cosine)", "bits": None, "train_seconds": 0.0,
             **evaluate_distances(lambda r: cosine_distances(Q[r], X), len(Q), yq, y, taxonomy)}]
    print(json.dumps(rows[-1]), flush=True)
    for bits in map(int, args.bits.split(",")):
        hashers = {
            "HPDH (WordNet levels)": (HPDHHasher(bits, epochs=args.epochs), levels["taxonomy"]),
            "HPDH (visual hierarchy levels)": (HPDHHasher(bits, epochs=args.epochs), levels["visual"]),
            "single level (DCWH)": (HPDHHasher(bits, epochs=args.epochs), levels["taxonomy"][:1]),
            "ITQ": (ITQHasher(bits), None),
            "sign of PCA": (SignPCAHasher(bits), None),
        }
        for name, (hasher, hasher_levels) in hashers.items():
            start = time.perf_counter()
            hasher.fit(X, hasher_levels)
            seconds = time.perf_counter() - start
            rows.append({"method": name, "bits": bits, "train_seconds": round(seconds, 1),
                         **evaluate_codes(hasher.encode(Q), hasher.encode(X), yq, y, taxonomy)})
            print(json.dumps(rows[-1]), flush=True)
    report = {"dataset": args.dataset, "train": int(train.sum()), "test": int(test.sum()), "epochs": args.epochs,
              "levels": {key: [int(l.max()) + 1 for l in value] for key, value in levels.items()}, "rows": rows}
    print("| method | bits | mAP | mAHP@250 | nDCG@1-100 | train s |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['bits'] or 'float'} | {row['map']:.3f} | {row['mahp@250']:.3f} | "
              f"{row['ndcg@1-100']:.3f} | {row['train_seconds']} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
