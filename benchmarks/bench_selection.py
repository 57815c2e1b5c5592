"""The validation search of 'treeseek run' before and after #31's changes, on real data, in one run.

Run:  .venv/bin/python benchmarks/bench_selection.py caltech101 --json bench-output/selection-caltech101.json
      .venv/bin/python benchmarks/bench_selection.py cifar10 --json bench-output/selection-cifar10.json

``select_parameters`` as the main job calls it (the default tree, soft ranking, the main job's alpha grid 1..16,
PCA caps 64/128/256/95%, tied and diagonal covariances) on the training split, first as before (every grid
point scored, alpha kept within its grid), then with both changes (covariance models whose validation leaf
accuracy is more than 0.1 below the best left out; alpha searched on past an edge of its grid). For each: the
chosen settings, the validation mAP@10, the grid's time, and mAP@10 / mAHP@250 (WordNet) of the model fitted
with them on the training split and scored on the test split.
"""
from __future__ import annotations

import time

from treeseek.apps.jobs.main_job import SOFT_GRID
from treeseek.evaluation import evaluate_retrieval
from treeseek.evaluation.tuning import select_parameters
from treeseek.io.features import FeatureSet
from treeseek.model import DEFAULT_HIERARCHY, TreeseekModel

from common import markdown_table, real_data_arguments, write_json


def main() -> None:
    args, (names, train_x, train_y, test_x, test_y, taxonomy) = real_data_arguments(__doc__.splitlines()[0])
    rows = []
    for label, options in (("before (every point, alpha within the grid)", {"prune_margin": None, "widen": False}),
                           ("after (pruned grid, widened alpha)", {})):
        started = time.perf_counter()
        selection = select_parameters(train_x, train_y, names, SOFT_GRID, hierarchy=DEFAULT_HIERARCHY, method="soft",
                                      **options)
        seconds = time.perf_counter() - started
        model = TreeseekModel(**selection.params).fit(train_x, train_y, names)
        result = evaluate_retrieval(model, FeatureSet(test_x, test_y, names), FeatureSet(train_x, train_y, names),
                                    methods=["soft"], ks=(10,), taxonomy=taxonomy, progress=False, full_ranking=False)
        scored = sum(1 for r in selection.grid if r.get("step") is None)
        row = {"variant": label, "params": selection.params, "validation_map@10": selection.score,
               "grid_seconds": seconds, "points_scored": scored, "notes": selection.notes,
               "test_map@10": result.metrics["soft"]["map@10"], "test_mahp@250": result.metrics["soft"]["mahp@250"]}
        rows.append(row)
        print(row, flush=True)
    print()
    print(markdown_table(["search", "PCA cap", "covariance", "α", "validation mAP@10", "grid points scored",
                          "grid time (s)", "test mAP@10", "test mAHP@250"],
                         [[r["variant"], r["params"]["max_components"] or "95%", r["params"]["covariance"],
                           f"{r['params']['alpha']:g}", f"{r['validation_map@10']:.4f}", r["points_scored"],
                           f"{r['grid_seconds']:.0f}", f"{r['test_map@10']:.4f}", f"{r['test_mahp@250']:.4f}"]
                          for r in rows]))
    for note in rows[-1]["notes"]:
        print("-", note)
    write_json(args.json, {"dataset": args.dataset, "rows": rows})


if __name__ == "__main__":
    main()
