"""torchvision ResNets with a choice of stem, shared by resnet18/ and resnet50/.

torchvision's ImageNet stem (7x7 stride-2 convolution, then a stride-2
max-pool) shrinks a 32x32 image to 8x8 before the first residual stage. The
CIFAR stem keeps full resolution: one 3x3 stride-1 convolution and no
max-pool. Everything else is torchvision's definition, randomly initialised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:  # torchvision is imported by `build` only: a trainer parses its flags (STEMS) without it
    import torchvision

STEMS = ("cifar", "imagenet")


def cifar_stem(model: torchvision.models.ResNet) -> torchvision.models.ResNet:
    """Replace conv1/maxpool by a 3x3 stride-1 convolution and no pooling (in place)."""
    width = model.conv1.out_channels
    model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits convs
    model.maxpool = nn.Identity()
    return model


def build(arch: str, num_classes: int, stem: str = "cifar") -> torchvision.models.ResNet:
    """torchvision's `arch` ("resnet18", "resnet50", ...) with `num_classes` outputs and the given stem."""
    import torchvision

    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; valid: {', '.join(STEMS)}")
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    return cifar_stem(model) if stem == "cifar" else model
