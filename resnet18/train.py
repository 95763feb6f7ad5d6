"""Train ResNet-18 (CIFAR stem) on CIFAR-10, CIFAR-100 or the bundled digits.

    python -m resnet18.train --dataset cifar10 --optimizer adamw \
        --pruning-method magnitude --target-sparsity 0.7 --output-dir runs/x
    python -m resnet18.train --dataset digits --image-size 8 --epochs 2   # offline smoke run

Writes run.json, metrics.json, checkpoint.pt and best.pt to --output-dir;
--resume continues from checkpoint.pt. Under torchrun it trains one run on
several processes (DDP), --batch-size being the global batch.
"""

import sys

from lib import classifier, cli, data, inference, run

DATASETS = ("cifar10", "cifar100", "digits")
OFFLINE_HINT = "or pick the offline handwritten digits (--dataset digits, CONFIG_RESNET18_DATASET_DIGITS)"


def get_args_parser():
    # Defaults match resnet18/Kconfig.
    p = cli.parser(__doc__.splitlines()[0], epochs=100, batch_size=128, lr=0.001)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="cifar10", choices=DATASETS)
    g.add_argument("--image-size", type=int, default=32, help="input side in pixels; CIFAR and digits are resized to it")
    g.add_argument("--train-samples", type=int, default=0, help="train on the first N examples only (0: all); for smoke runs")
    g.add_argument("--no-download", action="store_true", help="never download: fail when the dataset is not on disk")
    return p


def parse_args(argv=None):
    p = get_args_parser()
    args = cli.check(p, p.parse_args(argv))
    if args.image_size < 8:
        p.error(f"--image-size must be at least 8, got {args.image_size}")
    if args.train_samples < 0:
        p.error(f"--train-samples must be >= 0, got {args.train_samples}")
    return args


def load(args):
    """(train, val, number of classes) for --dataset."""
    if args.dataset == "digits":
        return data.digits_rgb(size=args.image_size)
    loader = data.cifar10 if args.dataset == "cifar10" else data.cifar100
    return loader(args.data_dir, download=not args.no_download, size=args.image_size, offline_hint=OFFLINE_HINT)


def build_model(args, classes: int | None = None):
    """The model this trainer trains for `args` (`classes`: the dataset's, read from it when None), on the CPU."""
    from resnet18.model import resnet18  # torchvision: imported once the flags are known good

    return resnet18(num_classes=load(args)[2] if classes is None else classes)


def example_inputs(args, batch: int):
    """`batch` validation images, as the model takes them (lib.inference)."""
    return inference.first_examples(load(args)[1], batch)


def quality(model, args, device) -> dict:
    """Validation accuracy (%) and loss of `model` on --dataset's validation split (lib.inference)."""
    return inference.classifier_quality(model, load(args)[1], device)


def main(args):
    train_set, val_set, classes = load(args)
    train_set = data.limit(train_set, args.train_samples)
    classifier.fit(args, lambda: build_model(args, classes), train_set, val_set, model_name="resnet18", dataset=args.dataset)


if __name__ == "__main__":
    args = parse_args()
    if not args.dry_run:
        sys.exit(run.execute(main, args))
