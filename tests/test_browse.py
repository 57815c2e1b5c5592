"""Browsing the tree (#30): searches within a branch, the tree with its counts, and the items under a node."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from treeseek.apps.server import create_app
from treeseek.index import TreeIndex
from treeseek.search import Ranking

from conftest import run_cli
from oracles import index_ranking, queries, stored_items


def leaves_below(payload: dict, node: int) -> set[int]:
    """The leaves under ``node``, from the tree's parent list alone."""
    parent, n_leaves = payload["parent"], payload["n_leaves"]
    below = set()
    for leaf in range(n_leaves):
        up = leaf
        while up >= 0:
            if up == node:
                below.add(leaf)
                break
            up = parent[up]
    return below


def branches(index: TreeIndex) -> list[int]:
    """Every inner node but the root, and two leaves."""
    tree = index.model.hierarchy_
    return [n for n in range(tree.n_leaves, tree.n_nodes) if n != tree.root] + [0, tree.n_leaves - 1]


@pytest.mark.parametrize("method", ["soft", "combined", "cosine"])
def test_a_search_within_a_branch_is_the_exact_ranking_of_its_items(planted, feature_index, method):
    index = TreeIndex.open(feature_index)
    tree, items = index.model.hierarchy_, stored_items(index)
    Q = queries(planted, n=12)
    everything_D, everything = index_ranking(index, Q, len(items["ids"]), method, 2.0,
                                             added=planted.features if method == "soft" else None)
    for node in branches(index):
        inside = set(items["ids"][np.isin(items["leaves"], list(leaves_below(tree.to_dict(), node)))].tolist())
        D, I = index.search(Q, 7, ranking=Ranking(method, alpha=2.0), subtree=tree.names[node])
        for row in range(len(Q)):
            keep = [i for i in everything[row] if i in inside][:7]
            expected = keep + [-1] * (7 - len(keep))
            assert I[row].tolist() == expected, (tree.names[node], row)
            kept_D = everything_D[row][np.isin(everything[row], keep)]
            np.testing.assert_allclose(D[row][: len(keep)], kept_D, atol=1e-5)


def test_the_api_and_the_command_line_search_within_a_branch_alike(planted, feature_index, tmp_path):
    from treeseek.io.features import save_features

    index = TreeIndex.open(feature_index)
    node = index.model.hierarchy_.names[branches(index)[0]]
    Q = queries(planted, n=3)
    save_features(tmp_path / "q.npz", Q, np.zeros(len(Q), dtype=np.int64), planted.class_names)
    cli = run_cli("search", feature_index, "--query", tmp_path / "q.npz", "-k", "5", "--within", node,
                  "--json", tmp_path / "r.json")
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads((tmp_path / "r.json").read_text())
    client = TestClient(create_app(feature_index))
    answer = client.post("/api/search/features", json={"features": Q.tolist(), "k": 5, "subtree": node}).json()
    ids = lambda report: [[hit["id"] for hit in q["results"]] for q in report["queries"]]  # noqa: E731
    assert ids(answer) == ids(from_cli) and answer["within"] == from_cli["within"] == node
    bad = run_cli("search", feature_index, "--query", tmp_path / "q.npz", "--within", "no such node")
    assert bad.returncode == 2 and bad.stderr.startswith("error: the tree has no node named 'no such node'")


def test_the_tree_counts_and_lists_the_items_under_every_node(feature_index):
    index = TreeIndex.open(feature_index)
    items = stored_items(index)
    client = TestClient(create_app(feature_index))
    answer = client.get("/api/tree").json()
    payload = index.model.hierarchy_.to_dict()
    for node in answer["nodes"]:
        inside = np.sort(items["ids"][np.isin(items["leaves"], list(leaves_below(payload, node["id"])))])
        assert node["items"] == len(inside), node["name"]
        page = client.get(f"/api/tree/{node['id']}/items", params={"offset": 2, "limit": 5}).json()
        assert page["total"] == len(inside) and [i["id"] for i in page["items"]] == inside[2:7].tolist()
    assert answer["nodes"][answer["root"]]["items"] == len(items["ids"])
    assert client.get("/api/tree/9999/items").status_code == 404


@pytest.mark.parametrize("command", [["search", "{out}", "--query", "q.npz"], ["duplicates", "{out}"],
                                     ["serve", "{out}"], ["index", "info", "{out}"]])
def test_an_output_folder_given_for_its_index_points_at_the_index(feature_index, tmp_path, command):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(feature_index, out / "index")
    result = run_cli(*[part.format(out=out) for part in command])
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {out} is the output of 'treeseek run'; its index is {out / 'index'}"


def test_a_collection_of_one_class_is_refused_in_one_line(tmp_path):
    from test_images import write_images

    write_images(tmp_path / "photos" / "cats", 4)
    result = run_cli("run", tmp_path / "photos", "--out", tmp_path / "out", "--no-progress")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path / 'photos'} holds one class (cats): ranking by class needs "
                                     f"at least two classes, one subfolder each")


def test_a_collection_too_small_to_test_names_its_classes_and_the_minimum(tmp_path):
    from test_images import write_images

    for name in ("ant", "bee", "cat"):
        write_images(tmp_path / "photos" / name, 2)
    result = run_cli("run", tmp_path / "photos", "--out", tmp_path / "out", "--no-progress")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: too few images to tune and test on: each class needs at least 3 (one to "
                                     "index, one to tune the settings on, one to test); these have fewer: ant (2), "
                                     "bee (2), cat (2)")
