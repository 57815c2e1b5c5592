import os

import numpy as np
import pytest
import torch

from treeseek.data.datasets import image_folder
from treeseek.embed.backbones import load_backbone
from treeseek.embed.extraction import extract_features
from treeseek.errors import TreeseekError

ACCORDION = 401  # ImageNet class index


def test_efficientnet_lite0_recognises_real_accordions(caltech_subset):
    backbone = load_backbone("efficientnet_lite0")
    data = image_folder(caltech_subset, classes=["accordion"])
    batch = torch.from_numpy(np.stack([backbone.preprocess(data.image(i)) for i in range(len(data))]))
    with torch.inference_mode():
        logits = backbone.network(batch)
        features = backbone.network.features(batch)
    assert float((logits.argmax(1) == ACCORDION).float().mean()) >= 0.75
    assert features.shape == (12, 1280) and torch.all(features >= 0)  # pooled ReLU6 outputs


@pytest.mark.parametrize("name, minimum", [("resnet20", 0.7), ("resnet56", 0.7)])
def test_cifar_resnets_classify_real_cifar_images(shared, cifar_test_subset, name, minimum):
    backbone = load_backbone(name, shared / "models" / f"cifar10-{name}.safetensors")
    data = image_folder(cifar_test_subset)
    assert data.class_names[:3] == ["airplane", "automobile", "bird"]
    batch = torch.from_numpy(np.stack([backbone.preprocess(data.image(i)) for i in range(len(data))]))
    with torch.inference_mode():
        predictions = backbone.network(batch).argmax(1).numpy()
    assert np.mean(predictions == data.labels) >= minimum
    features, _, _ = extract_features(backbone, data, batch_size=50, progress=False)
    assert features.shape == (200, 64)


def test_backbone_errors_say_what_to_do(tmp_path):
    with pytest.raises(TreeseekError, match="unknown backbone"):
        load_backbone("alexnet-9000")
    with pytest.raises(TreeseekError, match="--weights"):
        load_backbone("resnet20")
    (tmp_path / "bad.safetensors").write_bytes(b"not tensors")
    with pytest.raises(TreeseekError, match="safetensors"):
        load_backbone("resnet20", tmp_path / "bad.safetensors")
    with pytest.raises(TreeseekError, match="pip install|weights"):
        load_backbone("torchvision:resnet18")


def test_feature_cache_recomputes_only_changed_files(caltech_subset, tmp_path, caplog):
    folder = tmp_path / "images"
    for name in ("accordion", "anchor"):
        (folder / name).mkdir(parents=True)
        for source in sorted((caltech_subset / name).iterdir())[:3]:
            (folder / name / source.name).write_bytes(source.read_bytes())
    (folder / "anchor" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    backbone = load_backbone("efficientnet_lite0")
    data = image_folder(folder)
    first, kept, stats = extract_features(backbone, data, cache_dir=tmp_path / "cache", progress=False)
    assert stats["computed"] == 6 and stats["skipped"] == 1 and not kept[3]
    assert "broken.jpg" in caplog.text  # logged as a warning (the command line prints it)
    again, _, stats = extract_features(backbone, data, cache_dir=tmp_path / "cache", progress=False)
    assert stats["computed"] == 0 and np.array_equal(first, again)
    changed = folder / "accordion" / sorted(os.listdir(folder / "accordion"))[0]
    changed.write_bytes((caltech_subset / "bass" / sorted(os.listdir(caltech_subset / "bass"))[0]).read_bytes())
    third, _, stats = extract_features(backbone, data, cache_dir=tmp_path / "cache", progress=False)
    assert stats["computed"] == 1
    assert not np.allclose(third[0], first[0]) and np.array_equal(third[1:], first[1:])


def test_torchvision_architecture_by_name(tmp_path, caltech_subset, monkeypatch):
    torchvision = pytest.importorskip("torchvision")  # not installed in CI: the CPU torch build has no torchvision
    network = torchvision.models.resnet18(weights=None).eval()
    torch.save(network.state_dict(), tmp_path / "resnet18.pth")
    backbone = load_backbone("torchvision:resnet18", tmp_path / "resnet18.pth")
    data = image_folder(caltech_subset, classes=["accordion"])
    features, _, _ = extract_features(backbone, data, progress=False)
    x = torch.from_numpy(np.stack([backbone.preprocess(data.image(i)) for i in range(len(data))]))
    with torch.inference_mode():
        trunk = torch.nn.Sequential(*list(network.children())[:-1])  # everything before the classifier
        expected = torch.flatten(trunk(x), 1).numpy()
    assert features.shape == (12, 512) and np.allclose(features, expected, atol=1e-5)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # nothing cached: never download
    with pytest.raises(TreeseekError, match="not in torchvision's cache"):
        load_backbone("torchvision:resnet18")
