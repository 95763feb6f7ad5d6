"""lib.data: the real loaders on small files written in the real on-disk formats.

CIFAR-10/100 as the pickled batches of cifar-10-batches-py/ and
cifar-100-python/, MNIST as idx files under MNIST/raw/, and an ImageFolder
tree of tiny PNGs. Nothing touches the network: downloads are either turned
off or made to fail deterministically.
"""

from __future__ import annotations

import pickle
import struct
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from lib import data

# One flat colour per class, so that any crop or flip keeps the centre pixel.
COLOURS = [(10 * c + 5, 255 - 20 * c, (70 * c) % 256) for c in range(10)]


def cifar_images(labels: list[int]) -> np.ndarray:
    """N x 3072 uint8 rows in CIFAR's layout: 1024 red, then green, then blue, row-major."""
    rows = np.zeros((len(labels), 3, 32, 32), dtype=np.uint8)
    for i, label in enumerate(labels):
        for ch, value in enumerate(COLOURS[label % 10]):
            rows[i, ch] = value
    rows[:, :, 0, 0] = 255  # one marker pixel (top-left) to catch an HWC/CHW mix-up
    return rows.reshape(len(labels), 3072)


def dump(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the published files are Python 2 pickles


def write_cifar10(root, per_batch: int = 4, test: int = 6) -> list[int]:
    folder = root / "cifar-10-batches-py"
    train_labels = []
    for b in range(1, 6):
        labels = [(b + i) % 10 for i in range(per_batch)]
        train_labels += labels
        dump(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "labels": labels,
                                          "data": cifar_images(labels), "filenames": [f"{b}_{i}.png" for i in range(per_batch)]})
    labels = [i % 10 for i in range(test)]
    dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels, "data": cifar_images(labels),
                                 "filenames": [f"t{i}.png" for i in range(test)]})
    dump(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072})
    return train_labels


def write_cifar100(root, train: int = 12, test: int = 5) -> None:
    folder = root / "cifar-100-python"
    for name, n in (("train", train), ("test", test)):
        fine = [(7 * i + 3) % 100 for i in range(n)]
        dump(folder / name, {"filenames": [f"{name}{i}.png" for i in range(n)], "batch_label": name, "fine_labels": fine,
                             "coarse_labels": [f // 5 for f in fine], "data": cifar_images(fine)})
    dump(folder / "meta", {"fine_label_names": [f"fine{c}" for c in range(100)], "coarse_label_names": [f"coarse{c}" for c in range(20)]})


def normalised(colour, mean, std) -> torch.Tensor:
    return (torch.tensor(colour, dtype=torch.float32) / 255 - torch.tensor(mean)) / torch.tensor(std)


# --- CIFAR-10 ---------------------------------------------------------------------------


def test_cifar10_reads_the_pickled_batches(tmp_path):
    labels = write_cifar10(tmp_path)
    train, val, classes = data.cifar10(tmp_path, download=False)
    assert classes == 10 and len(train) == 20 and len(val) == 6
    assert train.targets == labels and train.classes[3] == "class3"
    x, y = val[4]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 4
    # Validation images are the stored pixels, only normalised: channels and layout are right.
    expected = normalised(COLOURS[4], data.CIFAR10_MEAN, data.CIFAR10_STD)
    assert torch.allclose(x[:, 16, 16], expected, atol=1e-5)
    assert torch.allclose(x[:, 0, 0], normalised((255, 255, 255), data.CIFAR10_MEAN, data.CIFAR10_STD), atol=1e-5)


def test_cifar10_training_split_is_augmented(tmp_path):
    write_cifar10(tmp_path)
    train, _, _ = data.cifar10(tmp_path, download=False)
    torch.manual_seed(0)
    views = torch.stack([train[0][0] for _ in range(20)])
    label = train.targets[0]
    # The centre pixel survives any 4-pixel shift and any flip ...
    assert torch.allclose(views[:, :, 16, 16], normalised(COLOURS[label], data.CIFAR10_MEAN, data.CIFAR10_STD).expand(20, 3), atol=1e-5)
    # ... but the views differ: random crops (zero padding shows) and flips move the marker pixel.
    assert len({tuple(v.flatten()[:200].tolist()) for v in views}) > 1


def test_cifar_resizes_to_the_image_size(tmp_path):
    write_cifar10(tmp_path)
    train, val, _ = data.cifar10(tmp_path, download=False, size=8)
    assert train[0][0].shape == (3, 8, 8) and val[0][0].shape == (3, 8, 8)


def test_missing_cifar10_says_where_to_put_it(tmp_path):
    with pytest.raises(data.DatasetMissing) as e:
        data.cifar10(tmp_path / "nowhere", download=False)
    message = str(e.value)
    assert "cifar-10-batches-py" in message and "data_batch_1" in message and "digits" in message


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    from torchvision import datasets

    def no_network(self):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(datasets.CIFAR10, "download", no_network)
    with pytest.raises(data.DatasetMissing, match=r"download failed: URLError") as e:
        data.cifar10(tmp_path, download=True, offline_hint="or pick --dataset digits")
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value) and "--dataset digits" in str(e.value)


def test_a_damaged_file_is_reported_and_kept(tmp_path):
    write_cifar10(tmp_path)
    broken = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    broken.write_bytes(b"not a pickle")
    with pytest.raises(data.DatasetMissing, match="not in CIFAR-10's format"):
        data.cifar10(tmp_path, download=False)
    assert broken.read_bytes() == b"not a pickle"


def test_readers_pickle_by_name(tmp_path):
    """Data loader workers started with spawn/forkserver receive the dataset pickled."""
    write_cifar10(tmp_path)
    train, _, _ = data.cifar10(tmp_path, download=False)
    copy = pickle.loads(pickle.dumps(train))
    assert type(copy) is type(train)
    assert np.array_equal(copy.data, train.data) and copy.targets == train.targets


# --- CIFAR-100 --------------------------------------------------------------------------


def test_cifar100_reads_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    train, val, classes = data.cifar100(tmp_path, download=False)
    assert classes == 100 and len(train) == 12 and len(val) == 5
    assert train.targets == [(7 * i + 3) % 100 for i in range(12)]
    assert val.classes[42] == "fine42"
    x, y = val[2]
    assert y == 17 and x.shape == (3, 32, 32)
    assert torch.allclose(x[:, 16, 16], normalised(COLOURS[17 % 10], data.CIFAR100_MEAN, data.CIFAR100_STD), atol=1e-5)


def test_missing_cifar100_names_its_files(tmp_path):
    with pytest.raises(data.DatasetMissing, match="cifar-100-python holds train, test, meta"):
        data.cifar100(tmp_path, download=False)


# --- MNIST ------------------------------------------------------------------------------


def write_idx(raw, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, *images.shape) + images.tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(labels)) + labels.tobytes())


def test_mnist_reads_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    write_idx(raw, "train", train_images, np.arange(7, dtype=np.uint8))
    write_idx(raw, "t10k", rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([9, 8, 7], dtype=np.uint8))
    train, val = data.mnist(tmp_path, download=False)
    assert len(train) == 7 and len(val) == 3
    x, y = train[5]
    assert y == 5 and x.shape == (1, 32, 32)  # padded by 2 for LeNet-5
    pixels = (torch.tensor(train_images[5], dtype=torch.float32) / 255 - 0.1307) / 0.3081
    assert torch.allclose(x[0, 2:30, 2:30], pixels, atol=1e-5)
    assert val[0][1] == 9


def test_missing_mnist_without_download(tmp_path):
    with pytest.raises(data.DatasetMissing, match="MNIST/raw"):
        data.mnist(tmp_path, download=False)


# --- ImageFolder ------------------------------------------------------------------------


def write_folder(root, split: str, classes: dict[str, int]) -> None:
    for name, count in classes.items():
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(count):
            colour = COLOURS[sorted(classes).index(name) if split == "train" else i % 10]
            Image.new("RGB", (20 + i, 12), colour).save(folder / f"{i}.png")


def test_image_folder_labels_follow_the_training_classes(tmp_path):
    write_folder(tmp_path, "train", {"ant": 3, "bee": 2, "cat": 2})
    write_folder(tmp_path, "val", {"bee": 1, "cat": 2})  # no "ant": plain ImageFolder would call bee 0
    train, val, classes = data.image_folder(tmp_path, size=16)
    assert classes == 3 and len(train) == 7 and len(val) == 3
    assert [y for _, y in val.samples] == [1, 2, 2]
    assert train[0][0].shape == (3, 16, 16) and val[0][0].shape == (3, 16, 16)
    assert val.classes == train.classes == ["ant", "bee", "cat"]
    assert pickle.loads(pickle.dumps(val)).class_to_idx == {"ant": 0, "bee": 1, "cat": 2}


def test_image_folder_missing_or_mismatched(tmp_path):
    with pytest.raises(data.DatasetMissing, match=r"put the training images in .*train/<class>/"):
        data.image_folder(tmp_path / "imagenet")
    write_folder(tmp_path, "train", {"ant": 1})
    write_folder(tmp_path, "val", {"ant": 1, "zebra": 1})
    with pytest.raises(data.DatasetMissing, match="class folders that .* lacks: zebra"):
        data.image_folder(tmp_path)


# --- offline digits and limits ---------------------------------------------------------


def test_digits_rgb_is_three_equal_channels():
    train, val, classes = data.digits_rgb(size=8)
    assert classes == 10 and len(train) == 1438 and len(val) == 359
    x = train.tensors[0]
    assert x.shape[1:] == (3, 8, 8)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_limit_takes_the_first_examples():
    train, _, _ = data.digits_rgb(size=8)
    head = data.limit(train, 100)
    assert len(head) == 100 and torch.equal(head[7][0], train[7][0])
    assert data.limit(train, 0) is train and data.limit(train, 10**6) is train
    with pytest.raises(ValueError):
        data.limit(train, -1)
