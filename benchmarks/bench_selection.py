"""The validation search of 'treeseek run' before and after each of #31's changes, on real data, in one run.

Run:  .venv/bin/python benchmarks/bench_selection.py caltech101 --json bench-output/selection-caltech101.json
      .venv/bin/python benchmarks/bench_selection.py cifar10 --json bench-output/selection-cifar10.json
      .venv/bin/python benchmarks/bench_selection.py fashion-mnist --json bench-output/selection-fashion-mnist.json

``select_parameters`` as the main job calls it (the default tree, soft ranking, the main job's alpha grid 1..16,
PCA caps 64/128/256/95%, tied and diagonal covariances) on the training split, four times, each adding one change:
before #31 (every grid point scored, alpha kept within its grid, raw cosine, T = 4); covariance models whose
validation leaf accuracy is more than 0.1 below the best left out, and alpha searched on past an edge of its grid;
the cosine taken on raw, centred or whitened features; the temperature chosen and widened (all of #31, the
default). For each: the chosen settings, the validation mAP@10, the points scored, the search's time, and mAP@10 /
mAHP@250 (against the dataset's taxonomy) of the model fitted with them on the training split and scored on the
test split.
"""
from __future__ import annotations

import time

from treeseek.apps.jobs.main_job import SOFT_GRID
from treeseek.evaluation import evaluate_retrieval
from treeseek.evaluation.tuning import select_parameters
from treeseek.io.features import FeatureSet
from treeseek.model import DEFAULT_HIERARCHY, TreeseekModel

from common import markdown_table, real_data_arguments, write_json

VARIANTS = (
    ("before #31", {"prune_margin": None, "widen": False}, {"cosine": ["raw"], "temperature": []}),
    ("+ pruned grid, widened α", {}, {"cosine": ["raw"], "temperature": []}),
    ("+ centred / whitened cosine", {}, {"temperature": []}),
    ("+ temperature (all of #31)", {}, {}),
)


def main() -> None:
    args, (names, train_x, train_y, test_x, test_y, taxonomy) = real_data_arguments(__doc__.splitlines()[0])
    rows = []
    for label, options, grid in VARIANTS:
        started = time.perf_counter()
        selection = select_parameters(train_x, train_y, names, {**SOFT_GRID, **grid}, hierarchy=DEFAULT_HIERARCHY,
                                      method="soft", **options)
        seconds = time.perf_counter() - started
        model = TreeseekModel(**selection.params).fit(train_x, train_y, names)
        result = evaluate_retrieval(model, FeatureSet(test_x, test_y, names), FeatureSet(train_x, train_y, names),
                                    methods=["soft"], ks=(10,), taxonomy=taxonomy, progress=False, full_ranking=False)
        row = {"variant": label, "params": selection.params, "validation_map@10": selection.score,
               "grid_seconds": seconds, "points_scored": sum(1 for r in selection.grid if r.get("step") != "pruned"),
               "notes": selection.notes, "test_map@10": result.metrics["soft"]["map@10"],
               "test_mahp@250": result.metrics["soft"]["mahp@250"]}
        rows.append(row)
        print(row, flush=True)
    print()
    print(markdown_table(["search", "PCA cap", "covariance", "cosine", "α", "T", "validation mAP@10",
                          "points scored", "search time (s)", "test mAP@10", "test mAHP@250"],
                         [[r["variant"], r["params"]["max_components"] or "95%", r["params"]["covariance"],
                           r["params"].get("cosine", "raw"), f"{r['params']['alpha']:g}",
                           f"{r['params'].get('temperature', 4.0):g}", f"{r['validation_map@10']:.4f}",
                           r["points_scored"], f"{r['grid_seconds']:.0f}", f"{r['test_map@10']:.4f}",
                           f"{r['test_mahp@250']:.4f}"] for r in rows]))
    for note in rows[-1]["notes"]:
        print("-", note)
    write_json(args.json, {"dataset": args.dataset, "rows": rows})


if __name__ == "__main__":
    main()
