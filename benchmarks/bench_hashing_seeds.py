"""Is HPDH's difference from DCWH larger than the spread between training seeds? And where does it come from?

Run:  .venv/bin/python benchmarks/bench_hashing_seeds.py cifar10 --bits 16 --seeds 0,1,2

Trains HPDH (WordNet levels, coarse weight w) and the single-level codes (DCWH) once per seed on the
train split's frozen features, with the protocol of bench_hashing.py (test queries, train database,
Hamming ties in a fixed random order). ``--coarse-weight select`` first chooses w from
``--weight-grid`` by validation mAHP@250 of codes of the same length and loss, per seed, as
``treeseek hash train --coarse-weight select:W1,W2,...`` does. Besides mAP, mAHP@250 and nDCG it
prints mAHP@250's two parts: precision@250 (the share of the top 250 in the query's class) and the
mean WordNet similarity of the other results, plus the mean and standard deviation over seeds.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from treeseek.codes import HPDHHasher, hierarchy_level_labels
from treeseek.codes.hpdh import COARSE_LOSSES, INITIAL_CENTRES
from treeseek.evaluation.code_tuning import COARSE_WEIGHTS, level_scales, select_coarse_weight
from treeseek.evaluation.hashing import evaluate_codes
from treeseek.io.files import atomic_write_json

from common import DATASETS, markdown_table, train_test_features

METRICS = ("map", "mahp@250", "ndcg@1-100", "precision@250", "wrong similarity@250")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--bits", type=int, default=16)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--coarse-weight", default="1", help="w of the coarse scales, or 'select'")
    parser.add_argument("--weight-grid", default=",".join(map(str, COARSE_WEIGHTS)),
                        help="the weights that --coarse-weight select chooses from")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--initial-centres", default="class-means", choices=INITIAL_CENTRES)
    parser.add_argument("--hidden", type=int, default=0, help="hidden ReLU units before the hash layer (0: linear)")
    parser.add_argument("--coarse-loss", default="centres", choices=COARSE_LOSSES, help="HPDH's coarse loss")
    parser.add_argument("--methods", default="hpdh,dcwh", help="which of hpdh, dcwh to train")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.coarse_weight != "select" and not args.coarse_weight.replace(".", "", 1).isdigit():
        parser.error(f"--coarse-weight must be a number or 'select', got {args.coarse_weight!r}")
    _, X, y, Q, yq, taxonomy = train_test_features(args.dataset)
    levels = hierarchy_level_labels(taxonomy, y)
    known = {"hpdh": ("HPDH (WordNet levels)", levels), "dcwh": ("single level (DCWH)", levels[:1])}
    picked = args.methods.split(",")
    if unknown := set(picked) - set(known):
        parser.error(f"unknown methods: {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    methods = dict(known[key] for key in picked)
    params = {"epochs": args.epochs, "initial_centres": args.initial_centres, "hidden": args.hidden,
              "coarse_loss": args.coarse_loss}
    fixed_weight = None if args.coarse_weight == "select" else float(args.coarse_weight)
    grid = [float(w) for w in args.weight_grid.split(",")]
    rows, selections = [], []
    for seed in map(int, args.seeds.split(",")):
        weight = fixed_weight
        if weight is None and "hpdh" in picked:
            started = time.perf_counter()
            weight, records = select_coarse_weight(X, y, taxonomy, args.bits, grid, seed=seed, **params)
            selections.append({"seed": seed, "coarse_weight": weight, "records": records,
                               "seconds": round(time.perf_counter() - started, 1)})
            print(json.dumps(selections[-1]), flush=True)
        for method, method_levels in methods.items():
            scales = level_scales(len(method_levels), 1.0 if weight is None else weight)
            hasher = HPDHHasher(args.bits, scales=scales, seed=seed, **params)
            started = time.perf_counter()
            hasher.fit(X, method_levels)
            seconds = time.perf_counter() - started
            scores = evaluate_codes(hasher.encode(Q), hasher.encode(X), yq, y, taxonomy)
            rows.append({"method": method, "seed": seed, "coarse_weight": weight if len(method_levels) > 1 else None,
                         "train_seconds": round(seconds, 1), **scores})
            print(json.dumps(rows[-1]), flush=True)
    table = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        table.append([method, len(mine), *(f"{np.mean([r[m] for r in mine]):.4f} ± {np.std([r[m] for r in mine]):.4f}"
                                           for m in METRICS)])
    print()
    print(markdown_table([f"method, {args.bits} bits", "seeds", *METRICS], table))
    if args.json:
        atomic_write_json(args.json, {"dataset": args.dataset, "bits": args.bits, "coarse_weight": args.coarse_weight,
                                      "weight_selection": selections,
                                      "epochs": args.epochs, "initial_centres": args.initial_centres,
                                      "hidden": args.hidden, "coarse_loss": args.coarse_loss, "rows": rows})


if __name__ == "__main__":
    main()
