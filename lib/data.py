"""Datasets: the bundled handwritten digits and MNIST.

`digits()` needs no network: scikit-learn ships 1797 8x8 digits, which are
resized to 32x32 and split 80/20 by a fixed seed (the split never depends on
the run's seed, so every run of a matrix sees the same validation set).
`mnist()` uses torchvision's loader and on-disk format; with no files and no
network it raises `DatasetMissing` saying where to put them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

SPLIT_SEED = 20240501  # fixed: the train/val split is part of the dataset, not of the run
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DatasetMissing(Exception):
    """A dataset is not on disk and could not be downloaded."""


def digits(size: int = 32, val_fraction: float = 0.2) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's handwritten digits as 1 x size x size tensors, normalised on the train split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = int(round(len(y) * val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[val_idx], y[val_idx])


def _mnist_present(raw: Path) -> bool:
    return all((raw / f).exists() for f in MNIST_FILES)


def mnist(root: str | Path, download: bool = True):
    """torchvision MNIST padded to 32x32 (the classic LeNet-5 input)."""
    from torchvision import datasets, transforms

    root = Path(root)
    raw = root / "MNIST" / "raw"
    if not _mnist_present(raw):
        if not download:
            raise DatasetMissing(_mnist_help(raw))
        try:
            datasets.MNIST(str(root), train=True, download=True)
        except Exception as e:  # any network failure: no route, DNS, HTTP errors
            raise DatasetMissing(f"{_mnist_help(raw)} (download failed: {type(e).__name__})") from None
    tf = transforms.Compose([transforms.Pad(2), transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    return datasets.MNIST(str(root), train=True, transform=tf), datasets.MNIST(str(root), train=False, transform=tf)


def _mnist_help(raw: Path) -> str:
    return (
        f"MNIST is not in {raw} and cannot be downloaded: put {', '.join(MNIST_FILES)} "
        "(or the official .gz files) there, or pick the offline handwritten digits (CONFIG_LENET5_DATASET_DIGITS)"
    )
