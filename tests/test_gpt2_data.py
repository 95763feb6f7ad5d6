"""gpt2.data: windows of a token file, the shuffled order as a pure function of position."""

import numpy as np
import pytest
import torch

from gpt2 import data as gdata
from lib.data import DatasetMissing


def write_tokens(path, n):
    np.arange(n, dtype=np.uint16).tofile(path)
    return path


def test_windows_are_inputs_and_their_one_token_shift(tmp_path):
    w = gdata.TokenWindows(write_tokens(tmp_path / "train.bin", 50), block_size=8)
    assert w.n_windows == (50 - 1) // 8
    x, y = w.get(np.array([0, 3]), torch.device("cpu"))
    assert x.dtype == torch.int64 and x.shape == (2, 8)
    assert x[0].tolist() == list(range(0, 8)) and y[0].tolist() == list(range(1, 9))
    assert x[1].tolist() == list(range(24, 32)) and y[1].tolist() == list(range(25, 33))


@pytest.mark.parametrize("n", [0, 5, 8])
def test_a_corpus_too_small_for_the_block_is_a_clear_error(tmp_path, n):
    with pytest.raises(gdata.CorpusTooSmall, match=r"too few for the block size 8 \(at least 9 are needed\).*--block-size"):
        gdata.TokenWindows(write_tokens(tmp_path / "val.bin", n), block_size=8)


def test_shuffled_order_depends_only_on_seed_and_position():
    order = gdata.ShuffledOrder(10, seed=3)
    first_two_passes = order.windows(0, 20)
    assert sorted(first_two_passes[:10]) == list(range(10)) and sorted(first_two_passes[10:]) == list(range(10))
    assert not np.array_equal(first_two_passes[:10], first_two_passes[10:])  # a new permutation per pass
    # Any split into batches, in any order, from a fresh object, reads the same sequence.
    again = gdata.ShuffledOrder(10, seed=3)
    pieces = [again.windows(13, 7), again.windows(0, 6), again.windows(6, 7)]
    assert np.array_equal(np.concatenate([pieces[1], pieces[2], pieces[0]]), first_two_passes)
    assert not np.array_equal(gdata.ShuffledOrder(10, seed=4).windows(0, 10), first_two_passes[:10])


def test_validation_batches_are_fixed_and_bounded(tmp_path):
    val = gdata.TokenWindows(write_tokens(tmp_path / "val.bin", 8 * 5 + 1), block_size=8)  # 5 windows
    assert gdata.eval_batches(val, batch_size=2, eval_iters=100) == 3  # never more than the split holds
    assert gdata.eval_batches(val, batch_size=2, eval_iters=2) == 2
    assert gdata.eval_batches(val, batch_size=8, eval_iters=10) == 1
    assert gdata.eval_windows(val, 2, 2).tolist() == [4, 0]  # wraps around a small split


def test_web_corpus_must_be_prepared_first(tmp_path):
    with pytest.raises(DatasetMissing, match="python -m gpt2.prepare --dataset openwebtext"):
        gdata.ensure_prepared("openwebtext", str(tmp_path))


def test_small_corpus_is_prepared_on_demand(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("hello world\n" * 50)
    out = gdata.ensure_prepared("file", str(tmp_path / "data"), str(src))
    assert (out / "train.bin").stat().st_size > 0 and (out / "meta.json").exists()
    assert gdata.ensure_prepared("file", str(tmp_path / "data"), str(src)) == out


WAITER = """
import sys
from gpt2 import data
print("prepared", data.ensure_prepared("file", sys.argv[1], sys.argv[2]), flush=True)
"""


def test_runs_that_start_at_once_prepare_a_corpus_once(tmp_path):
    """A second run finding the corpus missing waits for the one preparing it, then uses its files."""
    import subprocess
    import sys

    from conftest import PATIENCE_S, REPO, wait_until
    from gpt2 import prepare

    src = tmp_path / "notes.txt"
    src.write_text("".join(f"Line {i} of the sample text.\n" for i in range(60)), encoding="utf-8")
    out = prepare.dataset_dir(tmp_path / "data", "file", src)
    with prepare.preparing(out):  # this test is the run preparing it
        waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(tmp_path / "data"), str(src)], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True)
        # /proc/locks lists a process waiting for a lock on a line starting "N: ->"
        wait_until(lambda: any("->" in ln and f" {waiter.pid} " in ln for ln in open("/proc/locks")),
                   "the second run waiting for the lock", waiter)
        prepare.prepare("file", tmp_path / "data", text_file=src)
        stamp = (out / "train.bin").stat().st_mtime_ns
    assert waiter.communicate(timeout=PATIENCE_S)[0].strip() == f"prepared {out}" and waiter.returncode == 0
    assert (out / "train.bin").stat().st_mtime_ns == stamp  # used, not prepared again
