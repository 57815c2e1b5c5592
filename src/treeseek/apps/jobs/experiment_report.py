"""A self-contained HTML report: tables, and every picture embedded as a data URI (one file to share)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from treeseek.io.files import atomic_write_bytes

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%}.pair{display:flex;gap:1em}
.best{font-weight:bold;background:#eef6ee}details{margin:1em 0}"""


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: dict, columns: list[str]) -> str:
    """Rows x columns of numbers, the best value of each column in bold."""
    best = {c: max((v[c] for v in rows.values() if c in v and v[c] == v[c]), default=None)  # v[c] == v[c]: not NaN
            for c in columns}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", *columns])
    body = []
    for name, values in rows.items():
        cells = []
        for c in columns:
            value = values.get(c)
            text = "" if value is None or value != value else f"{value:.3f}"
            cells.append(f'<td class="best">{text}</td>' if value is not None and value == best[c] else f"<td>{text}</td>")
        body.append(f"<tr><td>{html.escape(name)}</td>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_html_report(report: dict, pictures: dict, examples: list[dict], grid: list[dict], path: Path) -> None:
    data, selection = report["dataset"], report["selection"]
    metric_columns = [c for c in next(iter(report["metrics"].values())) if c.startswith("map@") or c in ("map", "mahp@250")]
    robustness_rows = {f"{row} ({condition})": values for condition, table in report["robustness"].items()
                       for row, values in table.items()}
    grid_columns = [c for c in grid[0] if c not in ("tree_shape",)] if grid else []
    grid_rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(point.get(c)))}</td>" for c in grid_columns) + "</tr>"
                        for point in grid)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>treeseek experiment</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>treeseek experiment</h1>",
        f"<p>Data <code>{html.escape(data['source'])}</code>: {data['classes']} classes, {data['train']} database "
        f"(train) and {data['test']} query (test) images. Backbone {html.escape(report['backbone']['name'])} "
        f"({report['backbone']['feature_dim']}-d). Taxonomy <code>{html.escape(report['taxonomy'])}</code>. "
        f"Query leaf accuracy {report['query_leaf_accuracy']:.1%}.</p>",
        f"<p>Chosen on a validation split ({selection['split']['n_validation']} images, by "
        f"{html.escape(selection['split']['metric'])}, {selection['grid_points']} grid points): "
        f"<code>{html.escape(json.dumps(selection['chosen']))}</code>. Tree shapes: "
        f"<code>{html.escape(json.dumps(report['tree_shapes']))}</code>.</p>",
        "<h2>Retrieval on the test split</h2>", _table(report["metrics"], metric_columns),
        _image(pictures["map_at_k"], "mAP@k curves"),
        *[f"<h3>The same rankings, metrics as {html.escape(name)} defines them</h3>"
          + _table(rows, list(next(iter(rows.values()))))
          for name, rows in report.get("metrics_by_convention", {}).items()],
        "<h2>Robustness</h2><p>Features re-extracted from perturbed test images; the database is clean.</p>",
        _image(pictures["robustness"], "robustness"),
        _table(robustness_rows, [c for c in metric_columns if c != "map"]),
        "<h2>Hierarchies</h2><div class='pair'>", _image(pictures["hierarchy"], "learned hierarchy"),
        _image(pictures["taxonomy"], "taxonomy"), "</div>",
        "<h2>Example queries: top-5 under cosine (left) and ours (right)</h2>",
    ]
    for example in examples:
        parts += [f"<h3>{html.escape(example['query'])}</h3><div class='pair'>",
                  _image(example["cosine"], "cosine"), _image(example["combined"], "ours"), "</div>"]
    parts += ["<details><summary>The whole validation grid</summary><table><tr>",
              "".join(f"<th>{html.escape(c)}</th>" for c in grid_columns), f"</tr>{grid_rows}</table></details>",
              "</body></html>"]
    atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
