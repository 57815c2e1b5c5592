import gzip
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from treeseek.data.datasets import cifar, fashion_mnist, image_files, image_folder, stratified_split
from treeseek.data.decoding import UnreadableImage, load_rgb
from treeseek.errors import TreeseekError


def write_images(folder, count, color=(200, 30, 30), mode="RGB", suffix=".jpg"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.new("RGB", (40 + i, 30), tuple(int(c) for c in color))
        if mode != "RGB":
            image = image.convert(mode)
        image.save(folder / f"img{i}{suffix}")


def test_every_mode_decodes_to_rgb(tmp_path):
    Image.new("L", (8, 8), 77).save(tmp_path / "gray.png")
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    rgba = Image.new("RGBA", (8, 8), (0, 0, 255, 0))  # fully transparent: shows the white background
    rgba.save(tmp_path / "alpha.png")
    Image.new("RGB", (8, 8), (10, 20, 30)).convert("P").save(tmp_path / "palette.png")
    assert load_rgb(tmp_path / "gray.png").getpixel((3, 3)) == (77, 77, 77)
    cyan = load_rgb(tmp_path / "cmyk.jpg").getpixel((3, 3))
    assert cyan[0] < 30 and cyan[1] > 220 and cyan[2] > 220  # full cyan ink is (0, 255, 255) on screen
    assert load_rgb(tmp_path / "alpha.png").getpixel((3, 3)) == (255, 255, 255)
    assert load_rgb(tmp_path / "palette.png").mode == "RGB"


def test_corrupt_and_truncated_files_are_unreadable(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    for name in ("noise.jpg", "cut.jpg"):
        with pytest.raises(UnreadableImage):
            load_rgb(tmp_path / name)


def test_image_folder_skips_non_images_and_empty_classes(tmp_path, caplog):
    write_images(tmp_path / "b_cat", 3)
    write_images(tmp_path / "a_dog", 2, mode="L", suffix=".png")
    (tmp_path / "a_dog" / "notes.txt").write_text("not an image")
    (tmp_path / "c_empty").mkdir()
    write_images(tmp_path / "BACKGROUND_Google", 2)
    data = image_folder(tmp_path)
    assert data.class_names == ["a_dog", "b_cat"]
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    assert "c_empty" in caplog.text  # logged as a warning (the command line prints it)
    (tmp_path / "train.txt").write_text("a_dog/img0.png\nb_cat/img0.jpg\nb_cat/img1.jpg\n")
    (tmp_path / "test.txt").write_text("a_dog/img1.png\nb_cat/img2.jpg\n")
    split = image_folder(tmp_path, {"train": tmp_path / "train.txt", "test": tmp_path / "test.txt"})
    assert sorted(split.splits.tolist()) == ["test", "test", "train", "train", "train"]
    with pytest.raises(TreeseekError):
        image_folder(tmp_path / "missing")


def test_stratified_split_takes_a_share_of_every_class():
    labels = np.repeat(np.arange(4), [10, 5, 2, 1])
    chosen = stratified_split(labels, 0.2, seed=1)
    assert [int(chosen[labels == c].sum()) for c in range(4)] == [2, 1, 1, 0]


def write_cifar(root, n=6):
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def test_cifar_batches_load_without_running_code(tmp_path):
    write_cifar(tmp_path / "cifar")
    data = cifar(tmp_path / "cifar")
    assert len(data) == 36 and data.items[0].shape == (32, 32, 3)
    assert (data.splits == "test").sum() == 6 and data.class_names[3] == "c3"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "cifar" / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(TreeseekError, match="refusing"):
        cifar(tmp_path / "cifar")


def write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_fashion_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n, compress in (("train", 7, True), ("t10k", 3, False)):
        write_idx(tmp_path / (f"{prefix}-images-idx3-ubyte" + (".gz" if compress else "")),
                  rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(tmp_path / (f"{prefix}-labels-idx1-ubyte" + (".gz" if compress else "")),
                  np.arange(n) % 10, compress)
    data = fashion_mnist(tmp_path)
    assert len(data) == 10 and (data.splits == "test").sum() == 3
    assert data.image(0).size == (28, 28) and data.image(0).mode == "RGB"
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09\x01")
    with pytest.raises(TreeseekError, match="truncated"):
        fashion_mnist(tmp_path)


def test_train_and_test_folders_become_splits(tmp_path):
    from treeseek.data.collections import load_images

    for split, count in (("train", 3), ("test", 2)):
        write_images(tmp_path / split / "cat", count)
        write_images(tmp_path / split / "dog", count, color=(10, 10, 200))
    data = load_images(tmp_path)
    assert data.class_names == ["cat", "dog"]
    assert (data.splits == "train").sum() == 6 and (data.splits == "test").sum() == 4
    write_images(tmp_path / "test" / "eel", 1)
    with pytest.raises(TreeseekError, match="other classes"):
        load_images(tmp_path)


def test_a_relative_folder_gives_absolute_paths_and_relative_ids(tmp_path, monkeypatch):
    """An index stores these paths: they must still name the pictures when it is served from elsewhere."""
    from treeseek.data.collections import load_images

    write_images(tmp_path / "photos" / "cat", 2)
    write_images(tmp_path / "split" / "train" / "cat", 2)
    write_images(tmp_path / "split" / "test" / "cat", 1)
    monkeypatch.chdir(tmp_path)
    data = image_folder("photos")
    assert data.items == [str(tmp_path / "photos" / "cat" / f"img{i}.jpg") for i in range(2)]
    assert data.ids().tolist() == ["cat/img0.jpg", "cat/img1.jpg"]
    both = load_images("split")
    assert all(item.startswith(str(tmp_path)) for item in both.items)
    assert both.ids().tolist() == ["train/cat/img0.jpg", "train/cat/img1.jpg", "test/cat/img0.jpg"]


def test_image_files_expands_folders_and_refuses_missing_paths(tmp_path, monkeypatch):
    write_images(tmp_path / "new" / "deep" / "cat", 2)
    (tmp_path / "new" / "notes.txt").write_text("not an image")
    write_images(tmp_path / "one", 1, suffix=".png")
    monkeypatch.chdir(tmp_path)
    assert image_files(["new", "one/img0.png", "new/deep"]) == [str(tmp_path / "new" / "deep" / "cat" / "img0.jpg"),
                                                   str(tmp_path / "new" / "deep" / "cat" / "img1.jpg"),
                                                   str(tmp_path / "one" / "img0.png")]
    with pytest.raises(TreeseekError, match="no such image file or folder: missing"):
        image_files(["new", "missing"])


def test_per_class_draws_the_same_images_of_a_class_whatever_the_other_folders_are_called(tmp_path):
    from pathlib import Path

    from treeseek.data.collections import load_images

    for name in ("ant", "bee", "cat"):
        write_images(tmp_path / "first" / name, 12)
    drawn = load_images(tmp_path / "first", per_class=4, seed=3)
    (tmp_path / "first").rename(tmp_path / "second")
    (tmp_path / "second" / "ant").rename(tmp_path / "second" / "zebra")  # now last of the classes, not first
    again = load_images(tmp_path / "second", per_class=4, seed=3)
    picked = lambda images, name: sorted(Path(item).name for item, label, split in  # noqa: E731
                                         zip(images.items, images.labels, images.splits)
                                         if images.class_names[label] == name)
    assert again.class_names == ["bee", "cat", "zebra"]
    for name in ("bee", "cat"):
        assert picked(again, name) == picked(drawn, name) and len(picked(drawn, name)) == 4
