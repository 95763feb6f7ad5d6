"""Datasets: the bundled handwritten digits, MNIST, CIFAR-10/100 and image folders.

`digits()` needs no network: scikit-learn ships 1797 8x8 digits, which are
resized to 32x32 and split 80/20 by a fixed seed (the split never depends on
the run's seed, so every run of a matrix sees the same validation set).
`mnist()` uses torchvision's loader and on-disk format; with no files and no
network it raises `DatasetMissing` saying where to put them.

For the ResNets: `cifar10()`, `cifar100()` (torchvision's readers and on-disk
format, downloaded when absent) and `image_folder()` (an ImageNet-style
train/ and val/ tree) return augmented 3-channel training data, plain
validation data and the class count; `digits_rgb()` is their offline stand-in.

The in-memory datasets are loaded once per process (`functools.cache`; the
datasets are never modified): the matrix runner's fork server loads a
matrix's data before forking its trainers, which then share it.
"""

from __future__ import annotations

import functools
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


@functools.cache
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


@functools.cache
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


# --- Colour image datasets for the ResNets --------------------------------------------
# CIFAR-10/100 and ImageNet-style folders go through torchvision's readers and
# on-disk formats. Each loader returns (train, val) datasets of 3 x size x size
# tensors and the number of classes; training splits carry the standard
# augmentation, validation splits none.

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DIGITS_OFFLINE_HINT = "or pick the offline handwritten digits (--dataset digits)"


@functools.cache
def digits_rgb(size: int = 32) -> tuple[TensorDataset, TensorDataset, int]:
    """The bundled digits as 3 x size x size tensors (grey copied to RGB), 10 classes, no download."""
    train, val = digits(size=size)
    rgb = [TensorDataset(d.tensors[0].repeat(1, 3, 1, 1), d.tensors[1]) for d in (train, val)]
    return rgb[0], rgb[1], 10


def limit(dataset, n: int):
    """The first `n` examples of `dataset` (all of it when n is 0 or larger than it)."""
    from torch.utils.data import Subset

    if n < 0:
        raise ValueError(f"a sample limit must be >= 0, got {n}")
    return dataset if n == 0 or n >= len(dataset) else Subset(dataset, range(n))


def _cifar_files(cls) -> list[str]:
    return [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _cifar(cls, label: str, root, download: bool, size: int, mean, std, offline_hint: str):
    from torchvision import transforms

    root = Path(root)
    folder = root / cls.base_folder
    help_text = (
        f"{label} is not in {folder} and cannot be downloaded: extract {cls.filename} "
        f"(from https://www.cs.toronto.edu/~kriz/cifar.html) in {root} so that {folder} holds "
        f"{', '.join(_cifar_files(cls))}, {offline_hint}"
    )
    if not all((folder / f).is_file() for f in _cifar_files(cls)):
        if not download:
            raise DatasetMissing(help_text)
        try:
            cls(str(root), train=True, download=True)  # fetches, checks the archive's md5, extracts
        except Exception as e:  # any network failure: no route, DNS, HTTP errors
            raise DatasetMissing(f"{help_text} (download failed: {type(e).__name__})") from None
    resize = [transforms.Resize(size, antialias=True)] if size != 32 else []
    normalise = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train_tf = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), *resize, *normalise]
    )
    val_tf = transforms.Compose([*resize, *normalise])
    from lib import image_readers

    reader = getattr(image_readers, f"{cls.__name__}ByFormat")
    try:
        train = reader(str(root), train=True, transform=train_tf)
        val = reader(str(root), train=False, transform=val_tf)
    except Exception as e:  # unpickling errors, missing keys, wrong array sizes
        raise DatasetMissing(
            f"{folder} has a file that is not in {label}'s format ({type(e).__name__}: {e}); "
            f"move the folder aside and extract {cls.filename} again, {offline_hint}"
        ) from None
    return train, val, len(train.classes)


@functools.cache
def cifar10(root, download: bool = True, size: int = 32, offline_hint: str = DIGITS_OFFLINE_HINT):
    """CIFAR-10 (50000/10000 images): random crop 32 with padding 4, horizontal flip, normalisation."""
    from torchvision import datasets

    return _cifar(datasets.CIFAR10, "CIFAR-10", root, download, size, CIFAR10_MEAN, CIFAR10_STD, offline_hint)


@functools.cache
def cifar100(root, download: bool = True, size: int = 32, offline_hint: str = DIGITS_OFFLINE_HINT):
    """CIFAR-100 (fine labels), with the same augmentation as `cifar10`."""
    from torchvision import datasets

    return _cifar(datasets.CIFAR100, "CIFAR-100", root, download, size, CIFAR100_MEAN, CIFAR100_STD, offline_hint)


def image_folder(root, size: int = 224, offline_hint: str = DIGITS_OFFLINE_HINT):
    """An ImageNet-style tree: root/train/<class>/*.jpg and root/val/<class>/*.jpg.

    Train: RandomResizedCrop(size) and horizontal flip; val: resize to
    size/0.875 then centre crop (the usual 224 <- 256). Both splits use the
    training split's class list, so label i means the same class in both even
    when val lacks some classes. Nothing is downloaded (ImageNet needs a login).
    """
    from torchvision import datasets, transforms

    root = Path(root)
    train_dir, val_dir = root / "train", root / "val"
    if not (train_dir.is_dir() and val_dir.is_dir()):
        raise DatasetMissing(
            f"no image folder at {root}: put the training images in {train_dir}/<class>/ and the validation "
            f"images in {val_dir}/<class>/ (same class folder names; ImageNet's flat val/ must first be sorted "
            f"into class folders), {offline_hint}"
        )
    normalise = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_tf = transforms.Compose(
        [transforms.RandomResizedCrop(size, antialias=True), transforms.RandomHorizontalFlip(), *normalise]
    )
    val_tf = transforms.Compose(
        [transforms.Resize(int(round(size / 0.875)), antialias=True), transforms.CenterCrop(size), *normalise]
    )
    try:
        train = datasets.ImageFolder(str(train_dir), transform=train_tf)
    except (FileNotFoundError, RuntimeError) as e:  # no class folders, or no images in them
        raise DatasetMissing(f"{train_dir}: {e}") from None
    classes = train.classes
    extra = sorted(d.name for d in val_dir.iterdir() if d.is_dir() and d.name not in train.class_to_idx)
    if extra:
        raise DatasetMissing(f"{val_dir} has class folders that {train_dir} lacks: {', '.join(extra[:5])}")

    from lib.image_readers import ImageFolderWithClasses

    val = ImageFolderWithClasses(str(val_dir), classes, transform=val_tf)
    if len(val) == 0:
        raise DatasetMissing(f"{val_dir} has no images in class folders named as in {train_dir}")
    return train, val, len(classes)
