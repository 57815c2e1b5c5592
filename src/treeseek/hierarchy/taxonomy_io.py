"""Read taxonomies from files and write hierarchies back.

Three formats are read:

* treeseek's own JSON (``Hierarchy.to_dict``);
* Barz & Denzler's ``X.parent-child.txt``: lines ``parent child`` of integer
  ids, with the leaves named in a sibling ``X.class_names.txt`` (``id name``);
* path files ``X.paths.tsv``: a header, then ``class<TAB>root > ... > node``;
  the class is a leaf under the last node.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from treeseek.errors import TreeseekError
from treeseek.hierarchy.tree import Hierarchy
from treeseek.io.files import atomic_write_bytes, atomic_write_json, read_json


def load_taxonomy(path: str | Path, class_names: Sequence[str] | None = None) -> Hierarchy:
    """Read a taxonomy in any supported format, aligned to ``class_names`` when given.

    Feature files without class names get the names "0" .. "K-1"; when none of
    those is a taxonomy class and the counts agree, classes map to the
    taxonomy's leaves by position.
    """
    path = Path(path)
    if not path.is_file():
        raise TreeseekError(f"taxonomy file not found: {path}")
    if path.suffix == ".json":
        hierarchy = Hierarchy.from_dict(read_json(path, "taxonomy"))
    elif path.name.endswith(".parent-child.txt"):
        names_path = path.with_name(path.name[: -len(".parent-child.txt")] + ".class_names.txt")
        hierarchy = read_parent_child(path, names_path)
    else:
        hierarchy = read_paths(path)
    if class_names is None:
        return hierarchy
    class_names = list(class_names)
    positional = class_names == [str(i) for i in range(len(class_names))]
    if positional and not set(class_names) & set(hierarchy.names[: hierarchy.n_leaves]):
        if hierarchy.n_leaves != len(class_names):
            raise TreeseekError(
                f"the features have {len(class_names)} unnamed classes but the taxonomy has {hierarchy.n_leaves}"
            )
        return hierarchy
    return hierarchy.restrict(class_names)


def read_parent_child(pairs_path: str | Path, names_path: str | Path) -> Hierarchy:
    """Barz & Denzler's format.

    The class-names file (``id name``) may name inner nodes too; the leaves are
    the named ids that are nobody's parent, in increasing id order.
    """
    if not Path(names_path).is_file():
        raise TreeseekError(f"class-names file not found beside the taxonomy: {names_path}")
    name_of: dict[str, str] = {}
    for number, line in _lines(names_path):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise TreeseekError(f"{names_path}:{number}: expected 'id name', got {line!r}")
        name_of[parts[0]] = parts[1].strip()
    parent_of: dict[str, str] = {}
    for number, line in _lines(pairs_path):
        parts = line.split()
        if len(parts) != 2:
            raise TreeseekError(f"{pairs_path}:{number}: expected 'parent child', got {line!r}")
        parent, child = parts
        if child in parent_of and parent_of[child] != parent:
            raise TreeseekError(f"{pairs_path}:{number}: node {child} has two parents ({parent_of[child]} and {parent})")
        parent_of[child] = parent
    parents = set(parent_of.values())
    leaf_ids = sorted((node for node in name_of if node not in parents), key=_natural_key)
    return _from_parent_map(parent_of, leaf_ids, name_of, str(pairs_path))


def read_paths(path: str | Path) -> Hierarchy:
    """``class<TAB>root > ... > node`` lines; a first line starting with ``class`` is a header."""
    parent_of: dict[str, str] = {}
    leaf_ids: list[str] = []
    for number, line in _lines(path):
        if number == 1 and line.lower().startswith("class\t"):
            continue
        if "\t" not in line:
            raise TreeseekError(f"{path}:{number}: expected 'class<TAB>path', got {line!r}")
        name, chain = line.split("\t", 1)
        nodes = [node.strip() for node in chain.split(">") if node.strip()]
        if not nodes:
            raise TreeseekError(f"{path}:{number}: class {name!r} has an empty path")
        leaf = "\0leaf:" + name.strip()  # classes live apart from synset names
        if leaf in parent_of:
            raise TreeseekError(f"{path}:{number}: class {name.strip()!r} is listed twice")
        leaf_ids.append(leaf)
        for parent, child in zip(nodes, nodes[1:] + [leaf]):
            if child in parent_of and parent_of[child] != parent:
                raise TreeseekError(
                    f"{path}:{number}: node {child} has two parents ({parent_of[child]} and {parent})"
                )
            parent_of[child] = parent
    name_of = {leaf: leaf.removeprefix("\0leaf:") for leaf in leaf_ids}
    return _from_parent_map(parent_of, leaf_ids, name_of, str(path))


def save_hierarchy(hierarchy: Hierarchy, path: str | Path) -> None:
    """Write JSON, or Newick when the file name ends in ``.nwk`` or ``.newick``."""
    path = Path(path)
    if path.suffix in (".nwk", ".newick"):
        atomic_write_bytes(path, (hierarchy.to_newick() + "\n").encode())
    else:
        atomic_write_json(path, hierarchy.to_dict())


def _from_parent_map(parent_of: dict[str, str], leaf_ids: list[str], name_of: dict[str, str], source: str) -> Hierarchy:
    missing = [name_of[leaf] for leaf in leaf_ids if leaf not in parent_of]
    if missing and len(leaf_ids) > 1:
        raise TreeseekError(f"{source}: class(es) missing from the taxonomy: {', '.join(missing[:5])}")
    leaf_set = set(leaf_ids)
    inner = sorted({*parent_of.values(), *parent_of.keys()} - leaf_set, key=_natural_key)
    ids = leaf_ids + inner
    index = {node: i for i, node in enumerate(ids)}
    parent = [index[parent_of[node]] if node in parent_of else -1 for node in ids]
    names = [name_of.get(node, node) for node in ids]
    try:
        return Hierarchy(parent, names, len(leaf_ids))
    except TreeseekError as exc:
        raise TreeseekError(f"{source}: {exc}") from None


def _natural_key(text: str) -> tuple:
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _lines(path: str | Path):
    try:
        with open(path, encoding="utf-8") as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\n").rstrip("\r")
                if line.strip() and not line.lstrip().startswith("#"):
                    yield number, line
    except FileNotFoundError:
        raise TreeseekError(f"file not found: {path}") from None
    except UnicodeDecodeError:
        raise TreeseekError(f"{path} is not UTF-8 text") from None
