"""ResNet-18 (He et al., 2016): torchvision's definition with the CIFAR stem.

The stem is one 3x3 stride-1 convolution and no max-pool (`lib.resnet`), the
usual choice for 32x32 inputs; `stem="imagenet"` keeps torchvision's.
"""

from __future__ import annotations

import torchvision

from lib.resnet import build


def resnet18(num_classes: int = 10, stem: str = "cifar") -> torchvision.models.ResNet:
    return build("resnet18", num_classes, stem)
