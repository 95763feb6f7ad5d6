"""End to end through make: quick start, SIGKILL + status + continue, lock, error lines, a clean git tree."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import kill_group, wait_until
from lib.results import read_json

pytestmark = pytest.mark.e2e

KILL_CONFIG = """CONFIG_MODEL_LENET5=y
CONFIG_LENET5_EPOCHS=15
CONFIG_LENET5_BATCH_SIZE=64
CONFIG_OPTIMIZER_SGD=y
CONFIG_PRUNING_NONE=y
CONFIG_PRUNING_MAGNITUDE=y
CONFIG_SPARSITIES="0.5"
CONFIG_MATRIX_AUTO_GRAPHS=n
"""


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("error:")]


def only_matrix(root: Path) -> Path:
    dirs = [p.parent for p in (root / "results").glob("*/matrix.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def status_of(make, run_id: str) -> str:
    """What `make status` says about one run."""
    result = make("status")
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if f"] {run_id} " in ln)
    return line.split(f"] {run_id} ", 1)[1].strip()


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root,
                          capture_output=True, text=True, check=True).stdout


def fresh_clone(root: Path) -> None:
    """Make the repository copy a git checkout with everything committed, as a fresh clone is."""
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "clone")


def epochs_done(run_dir: Path) -> int:
    return len((read_json(run_dir / "metrics.json") or {}).get("history", []))


def snapshot(run_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


# Figures measured rather than computed: they differ between two processes.
MEASURED = ("elapsed_s", "train_time_s", "peak_memory_mib", "samples_per_s", "tokens_per_s")


def comparable(metrics: dict) -> dict:
    """metrics.json without wall-clock, throughput and memory figures, which differ between two processes."""
    return {"history": [{k: v for k, v in h.items() if k not in MEASURED} for h in metrics["history"]],
            "final": {k: v for k, v in metrics["final"].items() if k not in MEASURED}}


def uninterrupted(root, mdir, run_dir) -> dict:
    """The comparable metrics of `run_dir`'s run executed again, start to end, from the argv matrix.json planned for it."""
    planned = next(r for r in json.loads((mdir / "matrix.json").read_text())["runs"] if r["run_id"] == run_dir.name)
    argv = list(planned["argv"])
    straight = root / "straight" / run_dir.name
    argv[argv.index("--output-dir") + 1] = str(straight)
    subprocess.run(argv, cwd=root, check=True, capture_output=True)
    return comparable(read_json(straight / "metrics.json"))


def test_make_without_config_says_what_to_run(make):
    result = make("all")
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "make defconfig" in lines[0] and "menuconfig" in lines[0]


def test_unknown_defconfig_lists_close_names(make):
    result = make("defconfig-lenet5-compar")
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "unknown defconfig 'lenet5-compar'" in lines[0]
    assert not (make.root / ".config").exists()


def test_sigkill_then_continue_resumes_exactly(make):
    root = make.root
    (root / ".config").write_text(KILL_CONFIG)
    proc = make.popen("all", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (root / "results").is_dir() and any((root / "results").glob("*/matrix.json")), "matrix.json", proc)
        mdir = only_matrix(root)
        first, second = mdir / "lenet5_sgd_none", mdir / "lenet5_sgd_magnitude_50"
        wait_until(lambda: (read_json(first / "run.json") or {}).get("status") == "completed", "the first run", proc)
        wait_until(lambda: epochs_done(second) >= 2, "two epochs of the second run", proc)
        assert status_of(make, second.name) == "running"  # its runner is alive

        # A second make in the same tree while the matrix runs is refused, and touches nothing.
        again = make("all")
        assert again.returncode != 0
        assert any("already running" in ln for ln in error_lines(again.stderr))
        assert len(list((root / "results").glob("*/matrix.json"))) == 1
    finally:
        kill_group(proc)  # make, the runner and the trainer, all at once

    killed_at = epochs_done(second)
    assert 2 <= killed_at < 15
    assert read_json(second / "run.json")["status"] == "running"  # died without a word
    assert status_of(make, second.name) == "interrupted (runner gone)"  # the lock says nobody runs it
    kept = snapshot(first)

    # continue refuses a changed .config and names the symbol
    (root / ".config").write_text(KILL_CONFIG.replace("BATCH_SIZE=64", "BATCH_SIZE=32"))
    refused = make("continue")
    assert refused.returncode != 0
    assert any("CONFIG_LENET5_BATCH_SIZE: 64 -> 32" in ln for ln in error_lines(refused.stderr))
    (root / ".config").write_text(KILL_CONFIG)

    resumed = make("continue")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "(kept)" in resumed.stdout and re.search(r"\] lenet5_sgd_magnitude_50 +completed ", resumed.stdout)

    assert snapshot(first) == kept  # completed run untouched, byte for byte
    log = (second / "train.log").read_text()
    resumed_epoch = int(log.split("at epoch ")[1].split()[0])
    assert resumed_epoch >= 2, "resumed from epoch 0 instead of the checkpoint"
    assert (second / "train.log.1").exists()  # the killed attempt's log is kept
    run_json = read_json(second / "run.json")
    assert run_json["status"] == "completed" and run_json["attempt"] == 2

    assert comparable(read_json(second / "metrics.json")) == uninterrupted(root, mdir, second)


def test_failed_runs_are_recorded_and_the_matrix_carries_on(make):
    root = make.root
    (root / ".config").write_text(
        "CONFIG_MODEL_LENET5=y\nCONFIG_LENET5_DATASET_MNIST=y\nCONFIG_OPTIMIZER_SGD=y\nCONFIG_OPTIMIZER_ADAM=y\n"
        "CONFIG_PRUNING_NONE=y\nCONFIG_MATRIX_AUTO_GRAPHS=n\n"
    )
    # No network, deterministically: every download goes to a closed loopback port.
    make.env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    result = make("all")
    assert result.returncode != 0
    mdir = only_matrix(root)
    for run in ("lenet5_sgd_none", "lenet5_adam_none"):  # both attempted: the first failure did not stop the matrix
        record = read_json(mdir / run / "run.json")
        assert record["status"] == "failed" and record["exit_code"] == 1
        assert "MNIST/raw" in record["error"] and "DIGITS" in record["error"]
    assert "| lenet5_adam_none | failed |" in result.stdout
    assert (mdir / "summary.md").exists()
    assert any("2 run(s) did not complete" in ln for ln in error_lines(result.stderr))


def test_quickstart_end_to_end(make):
    """README command 1 without the venv: every run completes, learns, hits its sparsity; graphs drawn; git stays clean."""
    fresh_clone(make.root)
    result = make("quickstart")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mdir = only_matrix(make.root)
    assert mdir.name.endswith("-quickstart")
    meta = read_json(mdir / "matrix.json")
    assert len(meta["runs"]) == 9 and meta["defconfig"] == "quickstart"
    for run in meta["runs"]:
        metrics = read_json(mdir / run["run_id"] / "metrics.json")
        assert read_json(mdir / run["run_id"] / "run.json")["status"] == "completed"
        final = metrics["final"]
        if metrics["pruning"] == "none":
            assert final["best_accuracy"] >= 95.0, run["run_id"]
        else:
            assert abs(final["sparsity_prunable"] - metrics["target_sparsity"]) <= 0.001, run["run_id"]
    assert "| lenet5_adam_magnitude_70 | " in (mdir / "summary.md").read_text()  # the report's table
    for name in ("lenet5_curves.png", "lenet5_metric_vs_sparsity.png", "lenet5_sparsity.png"):
        assert (mdir / "graphs" / name).stat().st_size > 10_000
    assert "![lenet5_curves](graphs/lenet5_curves.png)" in (mdir / "report.md").read_text()
    assert git(make.root, "status", "--porcelain", "--untracked-files=all") == ""  # published images untouched
    assert meta["git"]["dirty"] is False

    # update-graphs redraws from the run directories alone; status and dry-run read the same matrix
    shutil.rmtree(mdir / "graphs")
    (mdir / "report.md").unlink()
    assert make("update-graphs").returncode == 0
    assert (mdir / "graphs" / "lenet5_metric_vs_sparsity.png").exists() and (mdir / "report.md").exists()
    status = make("status")
    assert status.returncode == 0 and status.stdout.count(" completed ") == 9
    dry = make("dry-run")
    assert dry.returncode == 0 and "9 runs" in dry.stdout and "-m lenet5.train" in dry.stdout


TINY_DEFCONFIG = """CONFIG_MODEL_LENET5=y
CONFIG_LENET5_EPOCHS=1
CONFIG_LENET5_BATCH_SIZE=64
CONFIG_OPTIMIZER_SGD=y
CONFIG_PRUNING_NONE=y
CONFIG_MATRIX_AUTO_GRAPHS=y
"""


def test_make_leaves_a_clone_clean_and_only_publish_graphs_writes_images(make):
    root = make.root
    (root / "defconfigs" / "tiny").write_text(TINY_DEFCONFIG)
    fresh_clone(root)
    published = {p: p.read_bytes() for p in (root / "images").rglob("*.png")}
    assert make("defconfig-tiny").returncode == 0
    first = make("all")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    mdir = only_matrix(root)
    assert (mdir / "graphs" / "lenet5_curves.png").is_file()
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    assert {p: p.read_bytes() for p in (root / "images").rglob("*.png")} == published

    shutil.rmtree(root / "results")  # the next matrix records a clean tree too
    second = make("all")
    assert second.returncode == 0 and read_json(only_matrix(root) / "matrix.json")["git"]["dirty"] is False
    mdir = only_matrix(root)

    refused = make("publish-graphs")
    assert refused.returncode != 0 and "RESULTS=results/<id>" in refused.stderr
    result = make("publish-graphs", f"RESULTS={mdir.relative_to(root)}")
    assert result.returncode == 0, result.stderr
    assert (root / "images" / "lenet5" / "curves.png").read_bytes() == (mdir / "graphs" / "lenet5_curves.png").read_bytes()
    drawn = {f"images/lenet5/{p.name.removeprefix('lenet5_')}" for p in (mdir / "graphs").glob("lenet5_*.png")}
    changed = {line[3:]: line[:2].strip() for line in git(root, "status", "--porcelain", "--untracked-files=all").splitlines()}
    assert set(changed) == drawn  # every drawn graph, nothing else
    assert changed["images/lenet5/curves.png"] == "M"  # a tracked image replaced
