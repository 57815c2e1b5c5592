"""End-to-end HPDH on CIFAR-10 (ResNet-56 fine-tuned with the hash layer), against HPDH on frozen features.

Run (on a machine with a GPU):
  .venv/bin/python benchmarks/bench_hashing_e2e.py --epochs 30 --batch-size 256 --lr 4e-3 --json bench-output/hashing-e2e.json

Both hashers use WordNet's levels and 64 bits; queries are the test split and the database the train
split. The frozen-feature hasher trains for the paper's 150 epochs; the end-to-end one for --epochs,
with the learning-rate steps at 1/3 and 2/3 of them (the paper's 50/100 of 150).

--codes FILE.npz keeps the end-to-end codes and labels, so that a later change to the evaluation can
re-score them on any machine, without a GPU: --rescore FILE.npz evaluates saved codes and trains nothing.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from treeseek.codes import HPDHHasher, hierarchy_level_labels
from treeseek.embed.backbones import load_backbone
from treeseek.embed.extraction import extract_features
from treeseek.evaluation.hashing import evaluate_codes
from treeseek.hierarchy import Hierarchy, load_taxonomy
from treeseek.io.files import atomic_save_npz, atomic_write_json, load_npz
from treeseek.training.hashing_network import train_end_to_end

from common import DATASETS, SHARED, dataset_features, markdown_table


def score(saved: dict, tree: Hierarchy) -> dict:
    """The HPDH protocol on the codes and labels that --codes saves."""
    return evaluate_codes(saved["query_codes"], saved["db_codes"], saved["query_labels"], saved["db_labels"], tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--skip-frozen", action="store_true", help="only the end-to-end run")
    parser.add_argument("--single-level", action="store_true", help="train on the class level only (DCWH)")
    parser.add_argument("--json")
    parser.add_argument("--codes", help="save the end-to-end codes and labels to this .npz")
    parser.add_argument("--rescore", help="evaluate the codes saved by --codes instead of training")
    args = parser.parse_args()
    if args.rescore:
        saved = load_npz(args.rescore, "saved codes")
        names = [str(name) for name in saved["class_names"]]
        tree = load_taxonomy(SHARED / "hierarchies" / DATASETS["cifar10"]["taxonomy"], names)
        print(json.dumps(score(saved, tree)))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = DATASETS["cifar10"]
    images, features, _, _, _ = dataset_features("cifar10", 256, device)
    names = images.class_names
    train, test = images.splits == "train", images.splits == "test"
    tree = load_taxonomy(SHARED / "hierarchies" / spec["taxonomy"], names)
    levels_tree = Hierarchy.flat(len(names), names) if args.single_level else tree
    name = "DCWH (single level)" if args.single_level else "HPDH"
    rows = []

    if not args.skip_frozen:
        start = time.perf_counter()
        frozen = HPDHHasher(args.bits).fit(features[train], hierarchy_level_labels(tree, images.labels[train]))
        rows.append({"method": "HPDH, frozen ResNet-56 features", "epochs": 150, "batch_size": 64,
                     "train_seconds": round(time.perf_counter() - start, 1), "device": "cpu",
                     **evaluate_codes(frozen.encode(features[test]), frozen.encode(features[train]),
                                      images.labels[test], images.labels[train], tree)})
        print(json.dumps(rows[-1]), flush=True)

    third = max(1, args.epochs // 3)
    hasher = HPDHHasher(args.bits, epochs=args.epochs, milestones=(third, 2 * third), batch_size=args.batch_size,
                        lr=args.lr)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train_end_to_end(hasher, images.split("train"), levels_tree, spec["backbone"], str(spec["weights"]), out,
                         device)
        seconds = time.perf_counter() - start
        tuned, kept, _ = extract_features(load_backbone(out), images, 256, None, device=device)
    labels, splits = images.labels[kept], images.splits[kept]
    codes, test, train = hasher.encode(tuned), splits == "test", splits == "train"
    saved = {"query_codes": codes[test], "db_codes": codes[train], "query_labels": labels[test],
             "db_labels": labels[train]}
    if args.codes:
        atomic_save_npz(args.codes, {**saved, "class_names": np.array(names)})
    rows.append({"method": f"{name}, end to end (ResNet-56 fine-tuned)", "epochs": args.epochs,
                 "batch_size": args.batch_size, "lr": args.lr,
                 "train_seconds": round(seconds, 1), "device": torch.cuda.get_device_name() if device == "cuda"
                 else "cpu", "loss_history": hasher.history_,
                 **score(saved, tree)})
    print(json.dumps(rows[-1]), flush=True)
    print(markdown_table(["method", "epochs", "mAP", "mAHP@250", "nDCG@1-100", "train s"],
                         [[row["method"], row["epochs"], f"{row['map']:.3f}", f"{row['mahp@250']:.3f}",
                           f"{row['ndcg@1-100']:.3f}", f"{row['train_seconds']} ({row['device']})"] for row in rows]))
    if args.json:
        atomic_write_json(args.json, {"bits": args.bits, "rows": rows})


if __name__ == "__main__":
    main()
