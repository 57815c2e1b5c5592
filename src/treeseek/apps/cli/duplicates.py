"""``treeseek duplicates``: groups of near-identical pictures in an index."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

import typer

from treeseek.choices import DUPLICATE_THRESHOLD as DEFAULT_THRESHOLD


def duplicates(
    index_dir: Path = typer.Argument(..., help="An index directory ('treeseek run' writes OUT/index)."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, help="Largest cosine distance between near-identical "
                                    "pictures (README: Near-duplicates)."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write the groups as CSV (group, id, file, class, "
                                           "distance to the group's first picture)."),
    shown: int = typer.Option(20, "--show", help="Groups printed (all are written to --csv)."),
) -> None:
    """List groups of near-identical pictures: copies, re-encodings, resized or mirrored versions."""
    from treeseek.apps.cli.index import open_index
    from treeseek.index.duplicates import near_duplicates
    from treeseek.io.files import atomic_write_bytes

    index = open_index(index_dir)
    groups = near_duplicates(index, threshold)
    rows = duplicate_rows(index, groups)
    typer.echo(f"{len(groups)} groups of near-identical pictures ({len(rows)} pictures) at cosine distance "
               f"<= {threshold:g}, among {len(index)} items")
    for number, group in enumerate(groups[:shown], start=1):
        typer.echo(f"group {number}:")
        for row in (r for r in rows if r["group"] == number):
            typer.echo(f"  {row['distance']:.4f}  {row['file'] or row['id']}  ({row['class'] or 'no class'})")
    if len(groups) > shown:
        typer.echo(f"... and {len(groups) - shown} more groups" + ("" if csv_out else " (--csv writes them all)"))
    if csv_out is not None:
        text = io.StringIO()
        writer = csv.DictWriter(text, ["group", "id", "file", "class", "distance"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(csv_out, text.getvalue().encode())
        typer.echo(f"wrote {csv_out}")


def duplicate_rows(index, groups) -> list[dict]:
    """One record per picture of every group: group number, id, file, class and distance to the first."""
    from treeseek.index.duplicates import group_members

    return [{"group": number, "id": item["id"], "file": item["source"], "class": item["class"] or "",
             "distance": round(item["distance"], 6)}
            for number, members in enumerate(group_members(index, groups), start=1) for item in members]
