"""Hashing benchmark: mAP, mAHP@250 and nDCG of binary codes at 16-64 bits, with training times.

Run:  .venv/bin/python benchmarks/bench_hashing.py caltech101 --json bench-output/hashing-caltech101.json
      .venv/bin/python benchmarks/bench_hashing.py cifar10 --json bench-output/hashing-cifar10.json

Protocol of HPDH: queries are the test split, the database is the train split; codes are trained on
the train split's frozen backbone features (the same features as bench_images.py, from its cache).
Methods (``--methods``): HPDH with the WordNet taxonomy's levels (``hpdh``), the same with the marginal
or the outside coarse loss (``hpdh-marginal``, ``hpdh-outside``, beyond the paper), HPDH with the levels
of the visual hierarchy that treeseek learns, cut by height (``hpdh-visual``), the single-level version
(``dcwh``), ``itq`` and sign-of-PCA (``pca``), and always the float features ranked by cosine distance.
Metrics use the WordNet taxonomy; the rows that the visual hierarchy's levels are compared on (float,
HPDH with visual levels, DCWH) are also scored on that tree ("visual" columns), since codes trained for
one tree are meant to preserve that tree.
"""
from __future__ import annotations

import argparse
import json
import time

from treeseek.codes import HPDHHasher, ITQHasher, SignPCAHasher, hamming_distances, hierarchy_level_labels
from treeseek.codes.hpdh import group_counts
from treeseek.evaluation.code_tuning import COARSE_WEIGHTS, level_scales, select_coarse_weight
from treeseek.evaluation.hashing import evaluate_codes, evaluate_distances
from treeseek.io.files import atomic_write_json
from treeseek.model import TreeseekModel
from treeseek.search import cosine_distances

from common import DATASETS, markdown_table, train_test_features

BITS = (16, 32, 48, 64)
METHODS = ("hpdh", "hpdh-marginal", "hpdh-outside", "hpdh-visual", "dcwh", "itq", "pca")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--json")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--bits", default=",".join(map(str, BITS)))
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of " + ", ".join(METHODS))
    parser.add_argument("--coarse-weight", type=float, help="w of the coarse scales (default: chosen on validation)")
    parser.add_argument("--convention", default="treeseek",
                        help="also score every row as this peer's code does (hpdh: its mAHP@250 and nDCG@1-100)")
    args = parser.parse_args()
    chosen = args.methods.split(",")
    if set(chosen) - set(METHODS):
        parser.error(f"unknown methods {sorted(set(chosen) - set(METHODS))}; choose from {', '.join(METHODS)}")
    names, X, y, Q, yq, taxonomy = train_test_features(args.dataset)
    visual = TreeseekModel(hierarchy="visual").fit(X, y, names).hierarchy_
    levels = {"taxonomy": hierarchy_level_labels(taxonomy, y), "visual": hierarchy_level_labels(visual, y)}
    print(f"levels: taxonomy {group_counts(levels['taxonomy'])}, visual {group_counts(levels['visual'])}", flush=True)
    weight, weight_records = args.coarse_weight, []
    if weight is None:
        started = time.perf_counter()
        weight, weight_records = select_coarse_weight(X, y, taxonomy, 32, COARSE_WEIGHTS, epochs=args.epochs)
        print(f"coarse weight {weight} chosen on validation in {time.perf_counter() - started:.0f} s: "
              f"{json.dumps(weight_records)}", flush=True)
    scales = {key: level_scales(len(value), weight) for key, value in levels.items()}
    def on_visual_tree(row: dict, distances) -> None:
        scores = evaluate_distances(distances, len(Q), yq, y, visual)
        row.update({"visual mahp@250": scores["mahp@250"], "visual ndcg@1-100": scores["ndcg@1-100"]})

    def as_peer(row: dict, distances) -> None:  # the same ranking, the peer's definitions ("hpdh mahp@250", ...)
        if args.convention != "treeseek":
            scores = evaluate_distances(distances, len(Q), yq, y, taxonomy, convention=args.convention)
            row.update({f"{args.convention} {name}": value for name, value in scores.items()})

    float_distances = lambda r: cosine_distances(Q[r], X)  # noqa: E731
    rows = [{"method": "float features (cosine)", "bits": None, "train_seconds": 0.0,
             **evaluate_distances(float_distances, len(Q), yq, y, taxonomy)}]
    as_peer(rows[-1], float_distances)
    on_visual_tree(rows[-1], float_distances)
    print(json.dumps(rows[-1]), flush=True)
    for bits in map(int, args.bits.split(",")):
        def on_wordnet(coarse_loss: str) -> tuple:
            return HPDHHasher(bits, scales=scales["taxonomy"], epochs=args.epochs, coarse_loss=coarse_loss), \
                levels["taxonomy"], False

        hashers = {
            "hpdh": ("HPDH (WordNet levels)", *on_wordnet("centres")),
            "hpdh-marginal": ("HPDH, marginal coarse loss (WordNet levels)", *on_wordnet("marginal")),
            "hpdh-outside": ("HPDH, outside coarse loss (WordNet levels)", *on_wordnet("outside")),
            "hpdh-visual": ("HPDH (visual hierarchy levels)", HPDHHasher(bits, scales=scales["visual"], epochs=args.epochs),
                            levels["visual"], True),
            "dcwh": ("single level (DCWH)", HPDHHasher(bits, epochs=args.epochs), levels["taxonomy"][:1],
                     "hpdh-visual" in chosen),
            "itq": ("ITQ", ITQHasher(bits), None, False),
            "pca": ("sign of PCA", SignPCAHasher(bits), None, False),
        }
        for name, hasher, hasher_levels, visual_too in (hashers[key] for key in METHODS if key in chosen):
            start = time.perf_counter()
            hasher.fit(X, hasher_levels)
            seconds = time.perf_counter() - start
            query_codes, db_codes = hasher.encode(Q), hasher.encode(X)
            rows.append({"method": name, "bits": bits, "train_seconds": round(seconds, 1),
                         **evaluate_codes(query_codes, db_codes, yq, y, taxonomy)})
            if visual_too:
                on_visual_tree(rows[-1], lambda r: hamming_distances(query_codes[r], db_codes))
            as_peer(rows[-1], lambda r: hamming_distances(query_codes[r], db_codes))
            print(json.dumps(rows[-1]), flush=True)
    report = {"dataset": args.dataset, "train": len(X), "test": len(Q), "epochs": args.epochs,
              "coarse_weight": weight, "coarse_weight_validation": weight_records,
              "levels": {key: group_counts(value) for key, value in levels.items()}, "rows": rows}
    peer = [] if args.convention == "treeseek" else [f"{args.convention} {name}" for name in ("mahp@250", "ndcg@1-100")]
    print(markdown_table(
        ["method", "bits", "mAP", "mAHP@250", "nDCG@1-100", *peer, "mAHP@250 visual", "nDCG visual", "train s"],
        [[row["method"], row["bits"] or "float", f"{row['map']:.3f}", f"{row['mahp@250']:.3f}",
          f"{row['ndcg@1-100']:.3f}", *(f"{row[key]:.3f}" if key in row else ""
                                        for key in (*peer, "visual mahp@250", "visual ndcg@1-100")),
          row["train_seconds"]]
         for row in rows]))
    if args.json:
        atomic_write_json(args.json, report)


if __name__ == "__main__":
    main()
