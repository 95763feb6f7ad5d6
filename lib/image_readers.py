"""torchvision dataset classes adapted for the harness's image loaders.

They live in their own module (imported by `lib.data` only when a colour image
dataset is asked for) so that importing `lib.data` does not pay for
torchvision, and so that the classes can be pickled by name when data loader
workers are started with spawn or forkserver.
"""

from __future__ import annotations

from torchvision import datasets


def _without_file_md5(cls):
    """Copy the class's file lists with the md5 sums dropped."""
    cls.train_list = [[name, None] for name, _ in cls.train_list]
    cls.test_list = [[name, None] for name, _ in cls.test_list]
    cls.meta = {**cls.meta, "md5": None}
    return cls


# torchvision verifies the md5 of the downloaded archive; the extracted files
# are then read by their format, so any file in CIFAR's pickle layout loads and
# a damaged one fails when it is unpickled.
@_without_file_md5
class CIFAR10ByFormat(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader without the per-file md5 check."""


@_without_file_md5
class CIFAR100ByFormat(datasets.CIFAR100):
    """torchvision's CIFAR-100 reader without the per-file md5 check."""


class ImageFolderWithClasses(datasets.ImageFolder):
    """An ImageFolder whose label numbering is a given class list (e.g. the training split's).

    Class folders missing under `root` are allowed (a small validation split
    need not hold every class); label i still means `classes[i]`.
    """

    def __init__(self, root, classes: list[str], **kwargs):
        self._given_classes = list(classes)
        super().__init__(root, allow_empty=True, **kwargs)

    def find_classes(self, directory):
        return list(self._given_classes), {c: i for i, c in enumerate(self._given_classes)}
