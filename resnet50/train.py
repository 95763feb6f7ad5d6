"""Train ResNet-50 on CIFAR-100, an ImageNet-style image folder, or the bundled digits.

    python -m resnet50.train --dataset cifar100 --optimizer sgd --lr 0.1 --output-dir runs/x
    python -m resnet50.train --dataset imagefolder --data-dir /data --image-folder imagenet
    python -m resnet50.train --dataset digits --image-size 8 --epochs 2   # offline smoke run

The image folder holds train/<class>/ and val/<class>/; it uses torchvision's
ImageNet stem, the 32x32 datasets the CIFAR stem (--stem overrides). Writes
run.json, metrics.json, checkpoint.pt and best.pt to --output-dir; --resume
continues from checkpoint.pt. Under torchrun it trains one run on several
processes (DDP), --batch-size being the global batch.
"""

import sys
from pathlib import Path

from lib import classifier, cli, data, inference, run
from lib.resnet import STEMS

DATASETS = ("cifar100", "imagefolder", "digits")
OFFLINE_HINT = "or pick the offline handwritten digits (--dataset digits, CONFIG_RESNET50_DATASET_DIGITS)"


def get_args_parser():
    # Defaults match resnet50/Kconfig.
    p = cli.parser(__doc__.splitlines()[0], epochs=100, batch_size=128, lr=0.001)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="cifar100", choices=DATASETS)
    g.add_argument("--image-folder", default="imagenet", help="image folder root (train/, val/ inside), relative to --data-dir unless absolute")
    g.add_argument("--image-size", type=int, default=0, help="input side in pixels (0: 224 for the image folder, 32 otherwise)")
    g.add_argument("--stem", default="auto", choices=("auto", *STEMS), help="auto: imagenet for the image folder, cifar otherwise")
    g.add_argument("--train-samples", type=int, default=0, help="train on the first N examples only (0: all); for smoke runs")
    g.add_argument("--no-download", action="store_true", help="never download: fail when the dataset is not on disk")
    return p


def parse_args(argv=None):
    p = get_args_parser()
    args = cli.check(p, p.parse_args(argv))
    if args.image_size == 0:
        args.image_size = 224 if args.dataset == "imagefolder" else 32
    if args.image_size < 8:
        p.error(f"--image-size must be 0 (the dataset's usual size) or at least 8, got {args.image_size}")
    if args.stem == "auto":
        args.stem = "imagenet" if args.dataset == "imagefolder" else "cifar"
    if args.train_samples < 0:
        p.error(f"--train-samples must be >= 0, got {args.train_samples}")
    return args


def load(args):
    """(train, val, number of classes) for --dataset."""
    if args.dataset == "digits":
        return data.digits_rgb(size=args.image_size)
    if args.dataset == "imagefolder":
        return data.image_folder(Path(args.data_dir) / args.image_folder, size=args.image_size, offline_hint=OFFLINE_HINT)
    return data.cifar100(args.data_dir, download=not args.no_download, size=args.image_size, offline_hint=OFFLINE_HINT)


def build_model(args, classes: int | None = None):
    """The model this trainer trains for `args` (`classes`: the dataset's, read from it when None), on the CPU."""
    from resnet50.model import resnet50  # torchvision: imported once the flags are known good

    return resnet50(num_classes=load(args)[2] if classes is None else classes, stem=args.stem)


def example_inputs(args, batch: int):
    """`batch` validation images, as the model takes them (lib.inference)."""
    return inference.first_examples(load(args)[1], batch)


def quality(model, args, device) -> dict:
    """Validation accuracy (%) and loss of `model` on --dataset's validation split (lib.inference)."""
    return inference.classifier_quality(model, load(args)[1], device)


def main(args):
    train_set, val_set, classes = load(args)
    train_set = data.limit(train_set, args.train_samples)
    classifier.fit(args, lambda: build_model(args, classes), train_set, val_set, model_name="resnet50", dataset=args.dataset)


if __name__ == "__main__":
    args = parse_args()
    if not args.dry_run:
        sys.exit(run.execute(main, args))
