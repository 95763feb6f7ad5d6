"""ResNet-18/50: the networks, the trainers' flags, their defconfigs, and runs end to end.

Training runs use the offline digits (or a small CIFAR-10 written in its real
format) at 8x8 pixels with a few dozen examples, so that each takes seconds
on two CPU cores.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from conftest import PATIENCE_S, REPO, kill_group, wait_until
from lib import config, matrix, run as lifecycle
from lib.resnet import cifar_stem
from lib.results import read_json
from resnet18 import train as train18
from resnet18.model import resnet18
from resnet50 import train as train50
from resnet50.model import resnet50
from scripts import defconfig

TRAINERS = {"resnet18": train18, "resnet50": train50}
TINY = ["--dataset", "digits", "--image-size", "8", "--train-samples", "128", "--batch-size", "32", "--monitor", "off"]


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the networks -------------------------------------------------------------------------


def test_cifar_stem_keeps_full_resolution():
    model = resnet18(num_classes=10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    seen = {}
    model.layer1.register_forward_hook(lambda m, i, o: seen.update(layer1=o.shape))  # returns None: output kept
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert seen["layer1"][-2:] == (32, 32)  # torchvision's own stem would give 8x8 here


def test_everything_but_the_stem_is_torchvision():
    ours, theirs = resnet18(num_classes=10), torchvision.models.resnet18(num_classes=10)
    assert params(ours) == params(theirs) - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3
    ours50, theirs50 = resnet50(num_classes=100), torchvision.models.resnet50(num_classes=100)
    assert params(ours50) == params(theirs50) - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3
    imagenet = resnet50(num_classes=1000, stem="imagenet")
    assert params(imagenet) == 25_557_032 and isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert imagenet(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_cifar_stem_is_initialised_like_torchvision_convs():
    torch.manual_seed(0)
    stem = cifar_stem(torchvision.models.resnet18()).conv1.weight.detach()
    fan_out = stem.shape[0] * 3 * 3
    assert abs(float(stem.std()) - math.sqrt(2 / fan_out)) < 0.02  # kaiming normal, fan_out, relu


def test_unknown_stem_is_rejected():
    with pytest.raises(ValueError, match="valid: cifar, imagenet"):
        resnet18(stem="vit")


# --- the trainers' flags ------------------------------------------------------------------


def test_resnet50_picks_size_and_stem_from_the_dataset():
    folder = train50.parse_args(["--dataset", "imagefolder"])
    assert (folder.image_size, folder.stem) == (224, "imagenet")
    cifar = train50.parse_args(["--dataset", "cifar100"])
    assert (cifar.image_size, cifar.stem) == (32, "cifar")
    forced = train50.parse_args(["--dataset", "imagefolder", "--image-size", "64", "--stem", "cifar"])
    assert (forced.image_size, forced.stem) == (64, "cifar")


@pytest.mark.parametrize(
    "model, argv, message",
    [
        ("resnet18", ["--image-size", "4"], "--image-size must be at least 8"),
        ("resnet18", ["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        ("resnet18", ["--train-samples", "-1"], "--train-samples must be >= 0"),
        ("resnet50", ["--dataset", "cifar10"], "invalid choice: 'cifar10'"),
        ("resnet50", ["--amp", "fp8"], "invalid choice: 'fp8'"),
    ],
)
def test_bad_flags_name_the_flag(model, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        TRAINERS[model].parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


RESNET_DEFCONFIGS = sorted(n for n in defconfig.available() if n.startswith("resnet"))


def test_the_issue_names_exist():
    for name in ("resnet18-state-pruning-compare", "resnet18-movement-pruning-compare",
                 "resnet18-comprehensive-pruning-compare", "resnet18-smoke", "resnet50-smoke"):
        assert name in RESNET_DEFCONFIGS
    assert any(n.startswith("resnet50-") and n != "resnet50-smoke" for n in RESNET_DEFCONFIGS)


@pytest.mark.parametrize("name", RESNET_DEFCONFIGS)
def test_every_run_of_a_resnet_defconfig_parses(name, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    dot_config = tmp_path / ".config"
    kconf = config.kconfig()
    config.load_strict(kconf, defconfig.find(name))
    kconf.write_config(str(dot_config))
    cfg = config.load(dot_config)
    runs = matrix.expand(cfg)
    assert runs
    for spec in runs:
        argv = matrix.argv(spec, cfg, str(tmp_path / matrix.run_id(spec)))
        at = max(i for i, a in enumerate(argv) if a == "-m")  # after torchrun's own "-m torch.distributed.run", if any
        assert argv[at + 1] == f"{spec.model}.train"
        rest = argv[at + 2 :]
        args = TRAINERS[spec.model].parse_args(rest[1:] if rest[:1] == ["--"] else rest)  # torchrun drops the "--"
        assert args.pruning_method == spec.pruning and args.optimizer == spec.optimizer


def test_precision_and_compile_settings_reach_the_trainer(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the Kconfig tree sources files relative to the repository root
    dot_config = tmp_path / ".config"
    dot_config.write_text(
        "CONFIG_MODEL_RESNET18=y\nCONFIG_AMP_BF16=y\nCONFIG_COMPILE=y\n"
        "CONFIG_OPTIMIZER_ADAMW=y\nCONFIG_PRUNING_NONE=y\n"
    )
    cfg = config.load(dot_config)
    argv = config.trainer_argv(cfg, "resnet18")
    assert "--compile" in argv and argv[argv.index("--amp") + 1] == "bf16"
    args = train18.parse_args(argv)
    assert args.compile and args.amp == "bf16" and args.dataset == "cifar10"
    assert "--compile" not in config.trainer_argv({**cfg, "COMPILE": False}, "resnet18")


def test_amp_is_a_no_op_on_the_cpu(capsys):
    args = train18.parse_args(["--amp", "fp16"])
    assert lifecycle.precision(args.amp, torch.device("cpu")) == "off"
    assert "ignored on cpu" in capsys.readouterr().out
    with lifecycle.autocast(torch.device("cpu"), "bf16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


# --- runs ---------------------------------------------------------------------------------


def trainer(model: str, *argv: str) -> subprocess.CompletedProcess:
    """Run a trainer to its end (bounded by PATIENCE_S against a hang)."""
    return subprocess.run([sys.executable, "-m", f"{model}.train", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=PATIENCE_S)


def learns(model: str, tmp_path) -> None:
    out = tmp_path / model
    done = trainer(model, *TINY, "--epochs", "2", "--optimizer", "adamw", "--lr", "0.001", "--output-dir", str(out))
    assert done.returncode == 0, done.stderr
    metrics = read_json(out / "metrics.json")
    first, last = (h["train_loss"] for h in metrics["history"])
    assert last < first and last < math.log(10), (first, last)  # below chance level
    assert read_json(out / "run.json")["status"] == "completed"
    assert metrics["model"] == model and metrics["dataset"] == "digits"


def test_resnet18_learns_on_the_offline_digits(tmp_path):
    learns("resnet18", tmp_path)


@pytest.mark.e2e
def test_resnet50_learns_on_the_offline_digits(tmp_path):
    learns("resnet50", tmp_path)


def test_missing_cifar_is_one_clear_line_and_destroys_nothing(tmp_path):
    out = tmp_path / "resnet18_sgd_none"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"an earlier attempt's checkpoint")
    (out / "metrics.json").write_text('{"history": []}\n')
    done = trainer("resnet18", "--dataset", "cifar10", "--no-download", "--data-dir", str(tmp_path / "data"),
                   "--monitor", "off", "--output-dir", str(out))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: CIFAR-10 is not in")
    assert "cifar-10-batches-py" in done.stderr and "--dataset digits" in done.stderr
    assert (out / "checkpoint.pt").read_bytes() == b"an earlier attempt's checkpoint"
    assert (out / "metrics.json").read_text() == '{"history": []}\n'
    assert read_json(out / "run.json")["status"] == "failed"
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.pt"))


def test_missing_image_folder_says_what_to_put_where(tmp_path, capsys):
    args = train50.parse_args(["--dataset", "imagefolder", "--data-dir", str(tmp_path), "--monitor", "off",
                               "--output-dir", str(tmp_path / "run")])
    assert lifecycle.execute(train50.main, args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'imagenet' / 'train'}/<class>/" in err and "--dataset digits" in err


@pytest.mark.e2e
def test_sigkill_then_resume_gives_the_same_final_metrics(tmp_path):
    """CIFAR-10 in its real format, with augmentation in a loader worker, magnitude pruning, SGD."""
    from test_data import write_cifar10

    write_cifar10(tmp_path / "data", per_batch=40, test=50)
    argv = ["--dataset", "cifar10", "--no-download", "--data-dir", str(tmp_path / "data"), "--image-size", "8",
            "--epochs", "3", "--batch-size", "20", "--workers", "1", "--optimizer", "sgd", "--lr", "0.02",
            "--pruning-method", "magnitude", "--target-sparsity", "0.5", "--monitor", "off"]
    straight = trainer("resnet18", *argv, "--output-dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "resnet18.train", *argv, "--output-dir", str(out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: (out / "checkpoint.pt").exists(), "the first checkpoint", proc)
    finally:
        kill_group(proc)  # the trainer and its loader worker, with no chance to clean up
    killed_at = torch.load(out / "checkpoint.pt", weights_only=False)["epoch"]
    assert killed_at < 3 and read_json(out / "run.json")["status"] == "running"

    resumed = trainer("resnet18", *argv, "--output-dir", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {out / 'checkpoint.pt'} at epoch {killed_at}" in resumed.stdout
    a, b = read_json(tmp_path / "straight" / "metrics.json"), read_json(out / "metrics.json")
    strip = lambda hist: [{k: v for k, v in h.items() if k != "elapsed_s"} for h in hist]  # noqa: E731
    assert strip(b["history"]) == strip(a["history"])
    for key in ("accuracy", "best_accuracy", "best_at", "sparsity_prunable", "nonzero_params"):
        assert b["final"][key] == a["final"][key], key
    assert read_json(out / "run.json")["attempt"] == 2


@pytest.mark.e2e
def test_ddp_on_two_cpu_processes(tmp_path):
    """torchrun, gloo: one run over two processes; rank 0 writes; the global batch is split."""
    out = tmp_path / "ddp"
    argv = ["--dataset", "digits", "--image-size", "8", "--train-samples", "256", "--batch-size", "64", "--epochs", "2",
            "--optimizer", "adamw", "--lr", "0.001", "--device", "cpu", "--output-dir", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "resnet18.train", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=PATIENCE_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("epoch 2/2") == 1  # printed by rank 0 only
    metrics, run_json = read_json(out / "metrics.json"), read_json(out / "run.json")
    assert run_json["status"] == "completed" and run_json["attempt"] == 1
    first, last = (h["train_loss"] for h in metrics["history"])
    assert last < first
    for h in metrics["history"]:  # accuracy over all 359 validation digits, summed across both ranks
        correct = h["val_accuracy"] * 359 / 100
        assert abs(correct - round(correct)) < 1e-6
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert len(state["rng"]) == 2 and state["epoch"] == 2
    json.dumps(metrics)  # plain JSON, nothing torch-specific leaked in
