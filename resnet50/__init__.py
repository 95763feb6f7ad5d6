"""ResNet-50 trainer package (CIFAR or ImageNet stem): `python -m resnet50.train`."""
