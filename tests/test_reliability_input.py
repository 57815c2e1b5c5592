"""Numeric extremes and broken input files: an answer or one error line, never a traceback (issue 25)."""
import json
from pathlib import Path

import numpy as np
import pytest

from treeseek.model import TreeseekModel

from reliability_workers import assert_one_error_line, cli, fresh_copy


# ------------------------------------------------------------------------------------------- numeric extremes
@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("extremes")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 12)
    good = rng.normal(size=(48, 16)) + labels[:, None]
    np.savez(root / "good.npz", features=good, labels=labels)
    np.savez(root / "constant.npz", features=np.full((48, 16), 3.0), labels=labels)
    huge = good.copy()
    huge[7, 2] = 1e200
    np.savez(root / "huge.npz", features=huge, labels=labels)
    constant_column = good.copy()
    constant_column[:, 4] = 2.5
    np.savez(root / "constant_column.npz", features=constant_column, labels=labels)
    (root / "text.npz").write_text("features,labels\n1,2\n")
    np.savez(root / "few.npz", features=rng.normal(size=(12, 64)), labels=np.repeat(np.arange(4), 3))
    return root


def test_constant_features_are_one_error_line(feature_files, tmp_path, capsys):
    status, _, err = cli("fit", feature_files / "constant.npz", "--out", tmp_path / "m", capsys=capsys)
    assert_one_error_line(status, err, "all 48 vectors are the same")


def test_features_whose_squares_overflow_are_one_error_line(feature_files, tmp_path, capsys):
    status, _, err = cli("fit", feature_files / "huge.npz", "--out", tmp_path / "m", capsys=capsys)
    assert_one_error_line(status, err, "first in row 7")
    status, _, err = cli("index", "create", feature_files / "huge.npz", "--model", tmp_path / "none", "--out",
                         tmp_path / "ix", capsys=capsys)
    assert status == 2 and "Traceback" not in err


def test_a_constant_dimension_is_harmless(feature_files, tmp_path, capsys):
    status, out, err = cli("fit", feature_files / "constant_column.npz", "--out", tmp_path / "m", "--no-plot",
                           capsys=capsys)
    assert status == 0, err
    assert "warning: 1 of the 16 feature dimensions are the same in every training vector" in err
    model = TreeseekModel.load(tmp_path / "m")
    data = np.load(feature_files / "constant_column.npz")
    assert np.isfinite(model.posteriors(data["features"])).all()
    assert model.fit_info_["pca_dim"] <= 15  # the constant dimension carries no variance and is dropped


def test_more_bits_than_samples_is_one_error_line(feature_files, tmp_path, capsys):
    for method in ("itq", "pca"):
        status, _, err = cli("hash", "train", feature_files / "few.npz", "--out", tmp_path / method, "--method",
                             method, "--bits", "64", capsys=capsys)
        assert_one_error_line(status, err, "64 bits need at least 64 training samples")


def test_an_id_beyond_64_bits_is_not_in_the_index(base_index, tmp_path, capsys):
    directory = fresh_copy(base_index, tmp_path, 0)
    status, _, err = cli("index", "remove", directory, "123456789012345678901", capsys=capsys)
    assert_one_error_line(status, err, "item 123456789012345678901 is not in the index")


def test_a_text_file_named_npz_is_called_what_it_is(feature_files, tmp_path, capsys):
    status, _, err = cli("fit", feature_files / "text.npz", "--out", tmp_path / "m", capsys=capsys)
    assert_one_error_line(status, err, "is not a .npz file")
    assert "pickle" not in err


def test_a_manifest_cannot_point_outside_its_index(base_index, tmp_path, capsys):
    directory = Path(fresh_copy(base_index, tmp_path, 0))
    manifest = json.loads((directory / "manifest.json").read_text())
    for field, value in (("model", "../../.."), ("model", "/etc"), ("segments", "..")):
        edited = dict(manifest)
        if field == "segments":
            edited["segments"] = [{**manifest["segments"][0], "name": value}]
        else:
            edited[field] = value
        (directory / "manifest.json").write_text(json.dumps(edited))
        status, _, err = cli("index", "info", directory, capsys=capsys)
        assert_one_error_line(status, err, "which is not a file of the index")


# ------------------------------------------------------------------------------------------ fuzzed CLI input
def corrupted_feature_files(root: Path, seed: int = 7):
    """A fixed corpus of broken feature files, each a mutation of a valid one."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 8)
    good = rng.normal(size=(24, 6)) + labels[:, None]
    names = np.array(["ant", "bee", "cat"])
    mutations = {
        "ints": dict(features=np.rint(good * 10).astype(np.int64), labels=labels),
        "bools": dict(features=good > 0, labels=labels),
        "strings": dict(features=good.astype(str), labels=labels),
        "complex": dict(features=good.astype(complex), labels=labels),
        "float16": dict(features=good.astype(np.float16), labels=labels),
        "vector": dict(features=good[:, 0], labels=labels),
        "cube": dict(features=good[:, :, None], labels=labels),
        "no_rows": dict(features=good[:0], labels=labels[:0]),
        "no_columns": dict(features=good[:, :0], labels=labels),
        "one_row": dict(features=good[:1], labels=labels[:1]),
        "nan": dict(features=np.where(rng.random(good.shape) < 0.05, np.nan, good), labels=labels),
        "inf": dict(features=np.where(rng.random(good.shape) < 0.05, -np.inf, good), labels=labels),
        "huge": dict(features=good * 1e180, labels=labels),
        "tiny": dict(features=good * 1e-300, labels=labels),
        "constant": dict(features=np.ones_like(good), labels=labels),
        "duplicate_rows": dict(features=np.repeat(good[:3], 8, axis=0), labels=labels),
        "point_classes": dict(features=np.repeat(good[[0, 8, 16]], 8, axis=0), labels=labels),
        "no_labels": dict(features=good),
        "negative_label": dict(features=good, labels=labels - 1),
        "fractional_labels": dict(features=good, labels=labels + 0.5),
        "string_labels": dict(features=good, labels=names[labels]),
        "short_labels": dict(features=good, labels=labels[:-3]),
        "one_class": dict(features=good, labels=np.zeros(24, np.int64)),
        "one_per_class": dict(features=good[:3], labels=np.arange(3)),
        "names_too_few": dict(features=good, labels=labels, class_names=names[:2]),
        "names_duplicated": dict(features=good, labels=labels, class_names=np.array(["ant", "ant", "cat"])),
        "ids_short": dict(features=good, labels=labels, ids=np.arange(5)),
        "objects": dict(features=np.array([None] * 24, dtype=object), labels=labels),
    }
    for name, arrays in mutations.items():
        np.savez(root / f"{name}.npz", **arrays)
    (root / "empty.npz").write_bytes(b"")
    (root / "garbage.npz").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "truncated.npz").write_bytes((root / "ints.npz").read_bytes()[:150])
    return sorted(root.glob("*.npz")), good, labels, names


def corrupted_taxonomies(root: Path, seed: int = 11) -> dict[Path, bool]:
    """Broken taxonomy files for the classes ant, bee, cat: path -> whether it must be refused."""
    rng = np.random.default_rng(seed)
    texts = {
        "empty.json": "",
        "garbage.json": "{{{ not json",
        "list.json": "[1, 2, 3]",
        "cycle.parent-child.txt": "3 4\n4 3\n3 0\n4 1\n4 2\n",
        "self_parent.parent-child.txt": "3 3\n3 0\n3 1\n3 2\n",
        "missing_class.paths.tsv": "class\tpath\nant\tanimal > insect\nbee\tanimal > insect\n",
        "extra_class.paths.tsv": "class\tpath\nant\tr > a\nbee\tr > a\ncat\tr > b\ndog\tr > b\n",
        "bad_columns.paths.tsv": "class\tpath\nant\nbee\tx\tq\ncat\ty\n",
        "binary.paths.tsv": rng.integers(0, 256, 300, dtype=np.uint8).tobytes().decode("latin-1"),
        "two_parents.parent-child.txt": "3 0\n4 0\n3 1\n4 2\n5 3\n5 4\n",
    }
    for name, text in texts.items():
        (root / name).write_text(text, encoding="latin-1")
        if name.endswith(".parent-child.txt"):
            (root / name.replace(".parent-child.txt", ".class_names.txt")).write_text("0 ant\n1 bee\n2 cat\n")
    return {root / name: not name.startswith("extra_class") for name in texts}  # extra classes are ignored


def test_fuzzed_feature_and_taxonomy_files_give_an_answer_or_one_error_line(tmp_path, capsys):
    paths, good, labels, names = corrupted_feature_files(tmp_path)
    np.savez(tmp_path / "valid.npz", features=good, labels=labels, class_names=names)
    assert cli("fit", tmp_path / "valid.npz", "--out", tmp_path / "model", "--no-plot", capsys=capsys)[0] == 0
    for path in paths:
        for args in (("fit", path, "--out", tmp_path / f"m-{path.stem}", "--no-plot"),
                     ("evaluate", tmp_path / "model", path, "--no-progress"),
                     ("index", "create", path, "--model", tmp_path / "model", "--out", tmp_path / f"ix-{path.stem}",
                      "--no-progress")):
            status, _, err = cli(*args, capsys=capsys)
            if status != 0:
                assert_one_error_line(status, err)
            elif args[0] == "fit":  # an answer must be a usable model
                model = TreeseekModel.load(tmp_path / f"m-{path.stem}")
                assert np.isfinite(model.posteriors(good[:, : model.input_dim_])).all(), path.name
    for taxonomy, broken in corrupted_taxonomies(tmp_path).items():
        for args in (("fit", tmp_path / "valid.npz", "--out", tmp_path / "mt", "--hierarchy", taxonomy, "--no-plot"),
                     ("evaluate", tmp_path / "model", tmp_path / "valid.npz", "--taxonomy", taxonomy,
                      "--no-progress")):
            status, _, err = cli(*args, capsys=capsys)
            assert status == (2 if broken else 0), f"{taxonomy.name}: {err}"
            if broken:
                assert_one_error_line(status, err)
