"""Train LeNet-5 on the bundled handwritten digits or on MNIST.

    python -m lenet5.train --dataset digits --optimizer adamw \
        --pruning-method magnitude --target-sparsity 0.7 --output-dir runs/x

Writes run.json, metrics.json, checkpoint.pt and best.pt to --output-dir;
--resume continues from checkpoint.pt.
"""

import sys

from lib import classifier, cli, data, inference, run
from lenet5.model import LeNet5

DATASETS = ("digits", "mnist")


def get_args_parser():
    # Defaults match lenet5/Kconfig: enough for >95 % on digits in seconds on a CPU.
    p = cli.parser(__doc__.splitlines()[0], epochs=12, batch_size=32, lr=0.003)
    p.add_argument("--dataset", default="digits", choices=DATASETS)
    return p


def parse_args(argv=None):
    parser = get_args_parser()
    return cli.check(parser, parser.parse_args(argv))


def load(args):
    """(train, val) for --dataset."""
    return data.digits(size=32) if args.dataset == "digits" else data.mnist(args.data_dir)


def build_model(args):
    """The model this trainer trains for `args`, freshly initialised, on the CPU."""
    return LeNet5(num_classes=10)


def example_inputs(args, batch: int):
    """`batch` validation images, as the model takes them (lib.inference)."""
    return inference.first_examples(load(args)[1], batch)


def quality(model, args, device) -> dict:
    """Validation accuracy (%) and loss of `model` on --dataset's validation split (lib.inference)."""
    return inference.classifier_quality(model, load(args)[1], device)


def main(args):
    train_set, val_set = load(args)
    classifier.fit(args, lambda: build_model(args), train_set, val_set, model_name="lenet5", dataset=args.dataset)


if __name__ == "__main__":
    args = parse_args()
    if not args.dry_run:
        sys.exit(run.execute(main, args))
