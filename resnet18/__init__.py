"""ResNet-18 (CIFAR-style stem) trainer package: `python -m resnet18.train`."""
