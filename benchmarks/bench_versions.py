"""This checkout's speed against an earlier commit, in the same run: the ratio of every timing figure.

Run:  .venv/bin/python benchmarks/bench_versions.py --base 737575f --json bench-output/versions.json
      .venv/bin/python benchmarks/bench_versions.py --base 737575f --only server --repeats 1   (one benchmark)

The earlier commit is checked out in a git worktree under bench-output/, and each benchmark runs as each
version's own script over each version's own source (the same virtual environment; the worktree's src/ comes
first on PYTHONPATH), the two versions alternating, ``--repeats`` times each; a figure's median is kept. The
table gives, for every figure that measures time, the speed of this checkout over the base's: above 1 is
faster now, below 1 slower.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import OUTPUT, ROOT, markdown_table, write_json

BENCHMARKS = {
    "core": ["bench_core.py"],
    "index-1M": ["bench_index.py", "--sizes", "1M"],
    "server": ["bench_server.py"],
}
TIME_WORDS = ("seconds", "ms_per_query")           # smaller is faster
RATE_WORDS = ("per_second", "queries_per_second")  # larger is faster


def figures(results, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a benchmark's JSON, by its path (list items by position)."""
    if isinstance(results, dict):
        items = results.items()
    elif isinstance(results, list):
        items = ((str(i), value) for i, value in enumerate(results))
    else:
        return {prefix: float(results)} if isinstance(results, (int, float)) and not isinstance(results, bool) else {}
    found = {}
    for key, value in items:
        found.update(figures(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def run_once(tree: Path, command: list[str], out: Path) -> dict[str, float]:
    environment = {**os.environ, "PYTHONPATH": str(tree / "src")}
    subprocess.run([sys.executable, str(tree / "benchmarks" / command[0]), *command[1:], "--json", str(out)],
                   check=True, env=environment, stdout=subprocess.DEVNULL)
    return figures(json.loads(out.read_text()))


def speed_ratio(name: str, base: float, now: float) -> float | None:
    leaf = name.rsplit(".", 1)[-1]
    if base <= 0 or now <= 0:
        return None
    if any(word in leaf for word in RATE_WORDS):
        return now / base
    if any(word in leaf for word in TIME_WORDS):
        return base / now
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only these")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    base_tree = OUTPUT / f"base-{args.base}"
    if not base_tree.is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base], check=True)
    results = {"base": args.base, "head": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                                         capture_output=True, text=True).stdout.strip(), "rows": []}
    for name in args.only or BENCHMARKS:
        runs = {"base": [], "now": []}
        for repeat in range(args.repeats):
            for version, tree in (("base", base_tree), ("now", ROOT)):
                print(f"{name}: {version} ({repeat + 1}/{args.repeats}) ...", file=sys.stderr, flush=True)
                runs[version].append(run_once(tree, BENCHMARKS[name], OUTPUT / f"versions-{name}-{version}.json"))
        for figure in sorted(set(runs["base"][0]) & set(runs["now"][0])):
            base = statistics.median(run[figure] for run in runs["base"])
            now = statistics.median(run[figure] for run in runs["now"])
            ratio = speed_ratio(figure, base, now)
            if ratio is not None:
                results["rows"].append({"benchmark": name, "figure": figure, "base": base, "now": now,
                                        "speed_now_over_base": round(ratio, 3)})
        write_json(args.json, results)  # after each benchmark: a later failure keeps what was measured
    print(markdown_table(["benchmark", "figure", f"base {args.base}", f"now {results['head']}", "speed now / base"],
                         [[row["benchmark"], row["figure"], f"{row['base']:.4g}", f"{row['now']:.4g}",
                           f"{row['speed_now_over_base']:.2f}"] for row in results["rows"]]))


if __name__ == "__main__":
    main()
