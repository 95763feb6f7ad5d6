"""The C kernels of the CPU mask update (`csrc/mask_select.c`, `csrc/state_scores.c`), built on first use.

The exact selection's passes over non-negative scores (threshold.py) cost,
as torch operations, one memory pass for each step of making a key (add
one, multiply by the mask), filtering it by its high bits (clamp, subtract,
shift) and counting it (bincount, one thread on the CPU), and a third pass
of score evaluations for the masks. The kernels make, filter and count the
keys in one pass over torch's OpenMP threads, and the second pass writes the
masks while recording the few keys in the k-th key's 16-bit bin, which are
settled apart (`select_split`). Below `PARALLEL_FROM` entries (LeNet-5's
62K) one call does a whole selection and writes the masks in place
(`select_small`), where the passes' torch operations cost more than the
work. `mask_zero` zeroes the pruned entries of many tensors in one call
(masking.py: gradients after every backward; weights and moments).
`state_scores` (csrc/state_scores.c) computes a state-pruning score in one
pass where `state.importance` makes up to six. See docs/pruning.md
("C kernels on the CPU") for what each saves.

The sources are compiled with the system's C compiler (`$CC`, else `cc`) into
`$XDG_CACHE_HOME/prune-harness/` (default `~/.cache`), named by a hash of
the sources and flags, so a changed source is rebuilt and concurrent runs
share one build (written under a temporary name, then renamed). Without a
compiler, or with `PRUNING_NATIVE=0`, `kernels()` is None and the pruning
runs as torch operations: for the same scores the same masks, bit for bit,
and the same zeros (a multiply may leave -0.0 where the kernels clear the
bits to +0.0); state scores may differ in their last bit, as torch's CPU
sqrt is not always correctly rounded, so two weights whose scores are
within a float of each other may swap places.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCES = tuple(Path(__file__).with_name("csrc") / name for name in ("mask_select.c", "state_scores.c"))
# no errno from sqrtf (lets its loops vectorise); no fused multiply-adds (each operation of a state score rounded once)
FLAGS = ("-O3", "-shared", "-fPIC", "-fopenmp", "-fno-math-errno", "-ffp-contract=off")
BINS = 1 << 16  # each pass counts a 16-bit digit of the 32-bit keys
SPREAD = 8  # spare zero bins a histogram carries for the kernel's scratch (mask_select.c)
PARALLEL_FROM = 1 << 18  # entries from which a pass is split over threads (a thread costs tens of microseconds)
_NO_MEMORY = 3
# the score formulas of csrc/state_scores.c, by the variants of lib/pruning/state.py that use them
STATE_FORMS = {"bitter0": 0, "bitter3": 1, "bitter4": 1, "bitter8": 1, "bitter7": 2, "bitter9": 3}
_STATUS = {
    1: "pruning scores contain NaN; check the weights and the optimizer state for divergence",
    2: "a pruning method that promises non-negative scores produced negative ones (or a negative NaN)",
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "prune-harness"


def build(sources: tuple[Path, ...] = SOURCES, directory: Path | None = None) -> Path:
    """Compile `sources` into one shared library (once per sources and flags) and return its path."""
    compiler = os.environ.get("CC", "cc")
    text = b"".join(source.read_bytes() for source in sources)
    tag = hashlib.sha256(text + " ".join((compiler,) + FLAGS).encode()).hexdigest()[:16]
    directory = directory or cache_dir()
    target = directory / f"libprune-kernels-{tag}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        subprocess.run([compiler, *FLAGS, *map(str, sources), "-o", tmp], check=True, capture_output=True, text=True, timeout=120)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def histogram_buffer() -> torch.Tensor:
    """Zeroed counts for `Kernels.histogram`: BINS counts, then SPREAD spare bins the kernel uses and leaves at zero."""
    return torch.zeros(BINS + SPREAD, dtype=torch.int64)


class Kernels:
    """Typed entry points of the built library; inputs are flat, contiguous CPU tensors."""

    def __init__(self, path: Path):
        lib = ctypes.CDLL(str(path))
        p, i64, i32, u32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_uint32
        lib.select_histogram.argtypes = [p, p, i64, i64, i32, p, i32]
        lib.select_histogram.restype = i32
        lib.select_keep.argtypes = [p, p, i64, u32, i32, p, i32]
        lib.select_keep.restype = None
        lib.select_split.argtypes = [p, p, i64, i64, p, p, p, i64, i32]
        lib.select_split.restype = i64
        lib.select_small.argtypes = [p, p, p, i32, i64]
        lib.select_small.restype = i32
        lib.mask_zero.argtypes = [p, p, p, p, i32, i32, i64]
        lib.mask_zero.restype = None
        lib.state_scores.argtypes = [i32, p, p, p, ctypes.c_float, ctypes.c_float, p, i64, i32, i64]
        lib.state_scores.restype = None
        self.lib, self.path = lib, path

    @staticmethod
    def _check(scores: torch.Tensor, mask: torch.Tensor) -> int:
        if scores.dtype != torch.float32 or mask.dtype != torch.bool or scores.device.type != "cpu" or mask.device.type != "cpu":
            raise TypeError(f"expected float32 scores and a bool mask on the CPU, got {scores.dtype}/{mask.dtype} on {scores.device}/{mask.device}")
        if not (scores.is_contiguous() and mask.is_contiguous()) or scores.numel() != mask.numel():
            raise ValueError("scores and mask must be contiguous and of the same size")
        n = scores.numel()
        return torch.get_num_threads() if n >= PARALLEL_FROM else 1

    def histogram(self, scores: torch.Tensor, mask: torch.Tensor, prefix: int | None, hist: torch.Tensor, check: bool = False) -> None:
        """Add to `hist` (from `histogram_buffer`) the high 16 bits of every key (`prefix` None), or the low 16 bits of those with high bits `prefix`.

        Keys: 0 where `mask` is False, else the score's float bits + 1. The
        counts are `hist[:BINS]`. With `check`, NaN or negative scores are a
        ValueError.
        """
        threads = self._check(scores, mask)
        if hist.dtype != torch.int64 or hist.numel() != BINS + SPREAD or not hist.is_contiguous():
            raise ValueError(f"hist must be {BINS} + {SPREAD} contiguous int64 counts (histogram_buffer())")
        status = self.lib.select_histogram(scores.data_ptr(), mask.data_ptr(), scores.numel(), -1 if prefix is None else prefix,
                                           int(check), hist.data_ptr(), threads)
        if status:
            raise ValueError(_STATUS[status])

    def keep(self, scores: torch.Tensor, mask: torch.Tensor, threshold: int, inclusive: bool, out: torch.Tensor | None = None) -> torch.Tensor:
        """Keep-mask: key > threshold (>= when `inclusive`), into `out` (may be `mask` itself)."""
        threads = self._check(scores, mask)
        if out is None:
            out = torch.empty_like(mask)
        elif out.dtype != torch.bool or not out.is_contiguous() or out.numel() != mask.numel():
            raise ValueError("out must be a contiguous bool tensor of the mask's size")
        self.lib.select_keep(scores.data_ptr(), mask.data_ptr(), scores.numel(), threshold, int(inclusive), out.data_ptr(), threads)
        return out

    def split(self, scores: torch.Tensor, mask: torch.Tensor, prefix: int, out: torch.Tensor, index: torch.Tensor, key: torch.Tensor) -> int:
        """The last pass when the k-th key's high 16 bits are `prefix`: `out` = key >> 16 > prefix; the candidates recorded.

        Candidates (high bits equal to `prefix`) are left False in `out`;
        their indices go to `index` (int64) and keys to `key` (int32), in
        index order, and their count is returned. `out` may be `mask`.
        """
        threads = self._check(scores, mask)
        if out.dtype != torch.bool or not out.is_contiguous() or out.numel() != mask.numel():
            raise ValueError("out must be a contiguous bool tensor of the mask's size")
        if index.dtype != torch.int64 or key.dtype != torch.int32 or not (index.is_contiguous() and key.is_contiguous()) or index.numel() != key.numel():
            raise ValueError("index (int64) and key (int32) must be contiguous and of one size")
        got = self.lib.select_split(scores.data_ptr(), mask.data_ptr(), scores.numel(), prefix, out.data_ptr(),
                                    index.data_ptr(), key.data_ptr(), index.numel(), threads)
        if got < 0:
            raise ValueError(f"more than {index.numel()} candidates with high bits {prefix:#x}")
        return got

    def select_small(self, scores: torch.Tensor, masks: list[torch.Tensor], n_prune: int) -> None:
        """Prune, in `masks` (updated in place), the `n_prune` lowest keys of `scores`, ties in flat order.

        `scores` is the flat concatenation of the tensors' scores, `masks`
        their masks in the same order (keys as in `histogram`: 0 where a
        mask is False, so those entries go first; 1 <= n_prune <= entries).
        One call, one thread: for small selections (below PARALLEL_FROM
        entries), where the passes' torch operations cost more than the work.
        """
        if scores.dtype != torch.float32 or scores.device.type != "cpu" or not scores.is_contiguous():
            raise TypeError(f"expected contiguous float32 scores on the CPU, got {scores.dtype} on {scores.device}")
        if any(m.dtype != torch.bool or m.device.type != "cpu" or not m.is_contiguous() for m in masks):
            raise TypeError("expected contiguous bool masks on the CPU")
        sizes = [m.numel() for m in masks]
        n = sum(sizes)
        if n != scores.numel() or n >= 1 << 32:
            raise ValueError(f"{scores.numel()} scores for masks of {n} entries (at most 2**32 - 1)")
        if not 1 <= n_prune <= n:
            raise ValueError(f"cannot prune {n_prune} of {n} entries here (1 to {n})")
        pointers = (ctypes.c_void_p * len(masks))(*[m.data_ptr() for m in masks])
        counts = (ctypes.c_int64 * len(masks))(*sizes)
        status = self.lib.select_small(scores.data_ptr(), pointers, counts, len(masks), n_prune)
        if status == _NO_MEMORY:
            raise MemoryError(f"select_small: no memory for the candidates of {n} entries")
        if status:
            raise ValueError(_STATUS[status])

    def zero(self, tensors: list[torch.Tensor], masks: list[torch.Tensor]) -> bool:
        """Zero each tensor's entries where its mask (bool or uint8) is 0, and return True; False when it cannot.

        It can when every pair is a contiguous CPU tensor of 2, 4 or 8-byte
        elements and a contiguous one-byte mask of as many entries; else it
        returns False having changed nothing. The bits are cleared: a pruned
        entry becomes +0.0 whatever it held (a multiply by 0 leaves -0.0 for
        negative entries and NaN for NaN).
        """
        if len(tensors) != len(masks):
            raise ValueError(f"{len(tensors)} tensors for {len(masks)} masks")
        prepared = PreparedMasks.of(masks)
        return prepared is not None and self.zero_prepared(tensors, prepared)

    def zero_prepared(self, tensors: list[torch.Tensor | None], prepared: "PreparedMasks") -> bool:
        """`zero` against masks read once: the i-th tensor by the i-th mask; False (nothing changed) when it cannot.

        For tensors zeroed again and again by the same masks (gradients after
        every backward, fresh tensors each time): only the tensors' addresses
        are read per call (LeNet-5's five gradients right after backward:
        68-75 against 110-119 us through `zero`, of which the C takes 8 us:
        the rest is Python run from cold caches). A None tensor (a
        parameter without gradient) makes it decline.
        """
        if len(tensors) != prepared.count:
            return False
        addresses, widths = prepared.c_tensors, prepared.c_widths
        for i, (t, n) in enumerate(zip(tensors, prepared.sizes)):
            if t is None or not (t.is_cpu and t.is_contiguous() and t.numel() == n):
                return False
            width = t.element_size()
            if width not in (2, 4, 8):
                return False
            addresses[i], widths[i] = t.data_ptr(), width
        self.lib.mask_zero(addresses, prepared.c_masks, prepared.c_sizes, widths, prepared.count,
                           torch.get_num_threads(), PARALLEL_FROM)
        return True

    def state_scores(self, form: int, weight: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                     scale: float, eps: float, out: torch.Tensor) -> bool:
        """One of `STATE_FORMS`' scores of every entry into `out`, in one pass, and True; False (nothing written) when it cannot.

        It can when `weight`, both moments and `out` are contiguous float32
        CPU tensors of one size; `scale` is the structural weight (1.0 for
        none). `state.importance` is what calls this; csrc/state_scores.c
        says how its floats relate to the torch operations'.
        """
        n = out.numel()
        for t in (weight, exp_avg, exp_avg_sq, out):
            if not (t.dtype == torch.float32 and t.is_cpu and t.is_contiguous() and t.numel() == n):
                return False
        self.lib.state_scores(form, weight.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), scale, eps, out.data_ptr(), n,
                              torch.get_num_threads(), PARALLEL_FROM)
        return True


class PreparedMasks:
    """Masks read once for `Kernels.zero_prepared`: their addresses and sizes as C arrays, and room for the tensors'.

    It holds the masks, so the addresses stay theirs; a mask replaced by
    another tensor needs a new `PreparedMasks` (`Pruner` re-reads its mask
    buffers when one is replaced).
    """

    def __init__(self, masks: list[torch.Tensor]):
        count = len(masks)
        self.masks, self.count, self.sizes = list(masks), count, [m.numel() for m in masks]
        self.c_masks = (ctypes.c_void_p * count)(*[m.data_ptr() for m in masks])
        self.c_sizes = (ctypes.c_int64 * count)(*self.sizes)
        self.c_tensors = (ctypes.c_void_p * count)()  # filled per call
        self.c_widths = (ctypes.c_int * count)()

    @classmethod
    def of(cls, masks: list[torch.Tensor]) -> "PreparedMasks | None":
        """The prepared masks, or None unless every mask is a contiguous one-byte CPU tensor."""
        if all(m.is_cpu and m.is_contiguous() and m.element_size() == 1 for m in masks):
            return cls(masks)
        return None


_switched_off = 0  # depth of `disabled()` blocks


def kernels() -> Kernels | None:
    """The built kernels, or None (`PRUNING_NATIVE=0`, inside `disabled()`, or no working C compiler: warned once)."""
    return None if _switched_off else _loaded()


class disabled:
    """`with disabled():` the pruning runs as torch operations within the block (benchmarks time both side by side).

    A class, not a generator: entering and leaving cost well under a microsecond.
    """

    def __enter__(self) -> None:
        global _switched_off
        _switched_off += 1

    def __exit__(self, *exc) -> None:
        global _switched_off
        _switched_off -= 1


@functools.lru_cache(maxsize=None)
def _loaded() -> Kernels | None:
    if os.environ.get("PRUNING_NATIVE", "1") == "0":
        return None
    try:
        return Kernels(build())
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        warnings.warn(f"pruning: C kernels unavailable ({detail.strip().splitlines()[-1] if detail.strip() else e}); "
                      "mask updates on the CPU use torch operations (same masks, slower)", RuntimeWarning, stacklevel=2)
        return None
