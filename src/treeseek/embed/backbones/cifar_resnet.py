"""The CIFAR ResNets of He et al. 2016 (6n+2 layers, option-A identity shortcuts).

Option A: where a block halves the resolution and doubles the channels, the
shortcut subsamples by 2 and pads the new channels with zeros, so it has no
weights. Tensor names follow Idelbayev's pytorch_resnet_cifar10.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from treeseek.errors import TreeseekError

DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}


class BasicBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.pad = (out - inp) // 2 if stride != 1 or inp != out else None

    def forward(self, x):
        y = nn.functional.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.pad is None else nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return nn.functional.relu(y + shortcut)


class CifarResNet(nn.Module):
    """``features`` gives the 64-d global-pooled penultimate layer; ``forward`` the logits."""

    feature_dim = 64

    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, 1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, 2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, 2)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(inp: int, out: int, count: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*[BasicBlock(inp if i == 0 else out, out, stride if i == 0 else 1) for i in range(count)])

    def features(self, x):
        x = nn.functional.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self.linear(self.features(x))


def cifar_resnet(name: str, weights: str | Path | None) -> CifarResNet:
    if name not in DEPTHS:
        raise TreeseekError(f"unknown CIFAR ResNet {name!r}; choose from {', '.join(DEPTHS)}")
    if weights is None:
        raise TreeseekError(f"{name} needs --weights FILE.safetensors (e.g. ../shared/models/cifar10-{name}.safetensors)")
    from safetensors.torch import load_file

    path = Path(weights)
    if not path.is_file():
        raise TreeseekError(f"weights file not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise TreeseekError(f"{path} is not a readable safetensors file: {exc}") from None
    num_classes = state["linear.weight"].shape[0] if "linear.weight" in state else 10
    model = CifarResNet(DEPTHS[name], num_classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise TreeseekError(f"{path} does not match {name} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
