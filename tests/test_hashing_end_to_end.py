"""End-to-end HPDH on real CIFAR-10 images with the shared ResNet-20, on the CPU."""
import numpy as np
import pytest

from treeseek.codes import HPDHHasher
from treeseek.codes.storage import load_hasher
from treeseek.data.datasets import image_folder
from treeseek.embed.backbones import load_backbone
from treeseek.embed.extraction import extract_features
from treeseek.hierarchy import load_taxonomy
from treeseek.training.hashing_network import train_end_to_end

from conftest import run_cli

pytestmark = pytest.mark.slow  # training a network end to end


def class_means(u: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.stack([u[labels == c].mean(axis=0) for c in range(n_classes)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_test_subset):
    from conftest import SHARED

    if not (SHARED / "models" / "cifar10-resnet20.safetensors").is_file():
        pytest.skip("../shared/models is not present")
    images = image_folder(cifar_test_subset)
    tree = load_taxonomy(SHARED / "hierarchies" / "cifar10.paths.tsv", images.class_names)
    weights = SHARED / "models" / "cifar10-resnet20.safetensors"
    runs = []
    for run in range(2):
        out = tmp_path_factory.mktemp(f"e2e{run}")
        hasher = HPDHHasher(16, epochs=3, lr=0.01, batch_size=32, seed=3)
        runs.append((train_end_to_end(hasher, images, tree, "resnet20", str(weights), out, "cpu", False), out))
    return images, weights, runs


def test_the_saved_backbone_and_hasher_reproduce_the_trained_codes(trained):
    images, _, [(hasher, out), _] = trained
    features, keep, _ = extract_features(load_backbone(str(out)), images, progress=False)
    u = hasher.transform(features)
    labels = images.labels[keep]
    # The trainer's last fine centres are the class means of its eval-mode outputs: the same network + layer.
    assert np.allclose(class_means(u, labels, len(images.class_names)), hasher.centres_[0], atol=1e-4)


def test_end_to_end_training_changes_the_backbone_and_lowers_the_loss(trained):
    images, weights, [(hasher, out), _] = trained
    before, _, _ = extract_features(load_backbone("resnet20", str(weights)), images, progress=False)
    after, _, _ = extract_features(load_backbone(str(out)), images, progress=False)
    assert not np.allclose(before, after, atol=1e-3)
    assert hasher.history_[-1] < hasher.history_[0]


def test_end_to_end_training_is_deterministic_under_a_seed(trained):
    _, _, [(first, _), (second, _)] = trained
    assert np.array_equal(first.weight_, second.weight_) and first.history_ == second.history_


def test_end_to_end_from_the_command_line(trained, cifar_test_subset, tmp_path):

    from conftest import SHARED

    _, weights, _ = trained

    def cli(*args):
        return run_cli("hash", "train", cifar_test_subset, *args)

    result = cli("--end-to-end", "--backbone", "resnet20", "--weights", weights, "--backbone-out", tmp_path / "bb",
                 "--hierarchy", SHARED / "hierarchies" / "cifar10.paths.tsv", "--epochs", "1", "--bits", "16",
                 "--device", "cpu", "--out", tmp_path / "hasher", "--no-progress", "--initial-centres", "random",
                 "--hidden", "8", "--coarse-loss", "marginal")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bb" / "weights.safetensors").is_file() and (tmp_path / "hasher" / "hasher.json").is_file()
    saved = (tmp_path / "hasher" / "hasher.json").read_text()
    assert '"initial_centres": "random"' in saved and '"coarse_loss": "marginal"' in saved
    # the saved hidden layer and backbone give the outputs whose class means the trainer kept as centres
    from treeseek.data.collections import load_images

    hasher = load_hasher(tmp_path / "hasher")[0]
    images = load_images(cifar_test_subset, "folder").split("train")  # what the command trained on
    features, keep, _ = extract_features(load_backbone(str(tmp_path / "bb")), images, progress=False)
    u, labels = hasher.transform(features), images.labels[keep]
    assert hasher.hidden == 8
    assert np.allclose(class_means(u, labels, 10), hasher.centres_[0], atol=1e-4)
    refused = cli("--end-to-end", "--method", "itq", "--backbone-out", tmp_path / "x", "--out", tmp_path / "y")
    assert refused.returncode == 2 and "--end-to-end trains hpdh or dcwh" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
