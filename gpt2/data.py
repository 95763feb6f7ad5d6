"""Token batches for GPT-2 from prepare.py's train.bin / val.bin.

A split is cut into non-overlapping windows of block_size + 1 tokens (input
and its one-token shift). Training reads them in a shuffled order that is a
pure function of the seed and of how many sequences the run has consumed:
sequence k of the run is window perm_e[k mod n] with e = k div n and perm_e a
permutation seeded by (seed, e). The data position of a run is therefore one
number, so a resumed run reads exactly the batches it would have read, and a
run split over N processes reads the same global batch as one process.
Validation always reads the same first windows in order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from gpt2 import prepare
from lib import distributed
from lib.data import DatasetMissing


class CorpusTooSmall(ValueError):
    pass


class TokenWindows:
    """One split (train.bin or val.bin) as windows of block_size + 1 tokens."""

    def __init__(self, path: str | Path, block_size: int):
        path = Path(path)
        self.path = path
        self.block_size = block_size
        self.tokens = np.memmap(path, dtype=np.uint16, mode="r") if path.stat().st_size else np.zeros(0, np.uint16)
        self.n_windows = (len(self.tokens) - 1) // block_size if len(self.tokens) else 0
        if self.n_windows < 1:
            raise CorpusTooSmall(
                f"{path} holds {len(self.tokens)} tokens, too few for the block size {block_size} "
                f"(at least {block_size + 1} are needed): lower the block size (--block-size, CONFIG_GPT2_BLOCK_SIZE) "
                "or use a bigger corpus"
            )

    def get(self, windows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (len(windows), block_size) as int64 on `device`."""
        t = self.block_size
        rows = np.stack([self.tokens[w * t : w * t + t + 1] for w in windows]).astype(np.int64)
        both = torch.from_numpy(rows)
        if device.type == "cuda":
            both = both.pin_memory().to(device, non_blocking=True)
        return both[:, :-1], both[:, 1:]


class ShuffledOrder:
    """Window index of the run's k-th sequence: a fresh permutation per pass over the data."""

    def __init__(self, n_windows: int, seed: int):
        self.n = n_windows
        self.seed = seed
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a batch spans at most two passes
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def windows(self, start: int, count: int) -> np.ndarray:
        k = np.arange(start, start + count)
        epochs, pos = np.divmod(k, self.n)
        out = np.empty(count, dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self.permutation(int(e))[pos[sel]]
        return out


def eval_batches(val: TokenWindows, batch_size: int, eval_iters: int) -> int:
    """How many validation batches an evaluation reads (never more than the split holds, at least one)."""
    return max(1, min(eval_iters, math.ceil(val.n_windows / batch_size)))


def eval_windows(val: TokenWindows, batch_size: int, index: int) -> np.ndarray:
    """Windows of validation batch `index`: consecutive, wrapping around a small split."""
    return (np.arange(index * batch_size, (index + 1) * batch_size)) % val.n_windows


def ensure_prepared(dataset: str, data_dir: str, text_file: str | None = None, device=torch.device("cpu")) -> Path:
    """The directory holding train.bin/val.bin, preparing small corpora on rank 0 when missing.

    Every process calls this; rank 0 alone writes, and a failure there fails
    every process (no process is left waiting at a barrier). `device` is where
    the process group's collectives run (the GPU under NCCL).
    """
    out = prepare.dataset_dir(data_dir, dataset, text_file)
    ready = prepare.is_prepared(out, text_file if dataset == "file" else None)
    error = None
    if not ready and distributed.is_main():
        if dataset not in prepare.AUTO_PREPARE:
            error = DatasetMissing(
                f"{out}/train.bin and val.bin are missing: prepare them first with "
                f"'python -m gpt2.prepare --dataset {dataset} --data-dir {data_dir}' "
                "(hours for a web corpus), or pick the offline corpus (CONFIG_GPT2_DATASET_PYDOC)"
            )
        else:
            try:
                with prepare.preparing(out):  # another run of the matrix may be preparing it right now
                    if not prepare.is_prepared(out, text_file if dataset == "file" else None):
                        prepare.prepare(dataset, data_dir, text_file)
            except Exception as e:  # reported below, on every process
                error = e
    ok = distributed.broadcast_flag(error is None, device)  # every process takes part, ready or not
    if error is not None:
        raise error
    if not ok:
        raise DatasetMissing(f"process 0 could not prepare {out} (see its error)")
    return out
