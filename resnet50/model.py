"""ResNet-50 (He et al., 2016): torchvision's bottleneck definition.

Image folders (ImageNet-sized inputs) use torchvision's 7x7 stride-2 stem and
max-pool; CIFAR-100 and the offline digits use the CIFAR stem of `lib.resnet`.
"""

from __future__ import annotations

import torchvision

from lib.resnet import build


def resnet50(num_classes: int = 100, stem: str = "cifar") -> torchvision.models.ResNet:
    return build("resnet50", num_classes, stem)
