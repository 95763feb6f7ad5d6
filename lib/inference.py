"""What a completed run's model costs at inference, next to its dense baseline, measured side by side.

`bench_run(run_dir)` rebuilds a completed run's model from its own files
(run.json's argv parsed by the model's trainer, best.pt's weights: pruned
entries are exact zeros), builds the variants below, measures them in one
process and writes the result into the run's metrics.json under
"inference" (atomically, the rest of the file kept). `make bench-inference`
(scripts/bench_inference.py) calls it for every completed run of a matrix,
a trainer's `--bench-inference` once the run has completed. How to read the
result: docs/inference.md.

Variants (`VARIANTS`, in report order):
  dense        the matrix's dense baseline of the same model and dataset (a
               completed sibling run with pruning "none" whose weights fit the
               run's architecture: the fine-tune parent first, then the same
               optimizer and seed); without one, the run's own architecture
               and weights ("dense_source" says which)
  pruned       the pruned model as stored: dense tensors holding zeros
  compact      channel granularity: the model with every all-zero unit removed
               (lib.pruning.channels.compact on a copy), also exported as
               <run dir>/compact.pt (lib.pruning.channels.export_compact)
  pruned_fp16  N:M on a GPU that runs 2:4 kernels: the pruned model in float16,
               the reference of sparse_2:4 (the same precision, dense kernels)
  sparse_2:4   N:M: the float16 model whose Linear weights with at most 2
               nonzeros in every 4 consecutive inputs are
               torch.sparse.to_sparse_semi_structured tensors; CUDA with compute
               capability >= 8.0 only, elsewhere {"unsupported": why}

Measures per variant: parameters and nonzeros; size on disk (`state_bytes`:
torch.save of the state dict) and compressed (`COMPRESSION`); latency at
batch 1 and throughput at a larger batch (`timed`: warm-up calls, then
repetitions, the variants called in turn within each repetition so that a
machine's drift reaches all of them alike; median and interquartile range);
peak memory of one large batch (`peak_memory`: CUDA max_memory_allocated
above what was allocated before; CPU the peak resident set above the one
before, reset through /proc/self/clear_refs, in a fresh process holding
only the model and the batch; None with the reason where it cannot be
measured); quality on the validation set through the trainer's own
evaluation; speed-up and size ratios against dense (`ratios`; sparse_2:4
also against its reference pruned_fp16, as "vs_reference"); and the
largest absolute difference of compact's outputs from pruned's, and of
sparse_2:4's from pruned_fp16's, on the large batch.

A trainer module (`<model>.train`) offers what the benchmark needs:
`parse_args(argv)`, `build_model(args)` (the model it trains, on the CPU),
`example_inputs(args, batch)` (a batch the model takes, on the CPU) and
`quality(model, args, device)` (a dict of validation figures whose keys are
the final block's: "accuracy" and "val_loss", or "perplexity" and
"val_loss"). `classifier_quality` and `first_examples` serve the image
classifiers.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from lib import checkpoint
from lib.results import is_done, now, read_json, write_json

SCHEMA = 1
WARMUP = 5
REPETITIONS = 30
ZLIB_LEVEL = 6
COMPRESSION = f"zlib level {ZLIB_LEVEL} of the torch.save bytes of the state dict"
TIMING = ("median and interquartile range (numpy linear percentiles) over the repetitions, after the warm-up calls; "
          "within each repetition every variant is called once, in rotating order")
VARIANTS = ("dense", "pruned", "compact", "pruned_fp16", "sparse_2:4")
LABELS = {"dense": "dense", "pruned": "pruned as stored", "compact": "compact", "pruned_fp16": "pruned, float16",
          "sparse_2:4": "sparse 2:4"}
SAME_OUTPUTS = {"compact": "pruned", "sparse_2:4": "pruned_fp16"}  # variants that compute what another does
SPARSE_MIN_CAPABILITY = (8, 0)
CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
ROOT = Path(__file__).resolve().parent.parent  # the repository: the model classes import from here


# -- measurements ----------------------------------------------------------------------------
def spread(samples: list[float]) -> dict:
    """Median, first and third quartiles and interquartile range of `samples` (numpy's linear percentiles), and n."""
    if not samples:
        raise ValueError("no samples to summarise")
    q1, median, q3 = (float(v) for v in np.percentile(np.asarray(samples, dtype=float), [25, 50, 75]))
    return {"median": median, "q1": q1, "q3": q3, "iqr": q3 - q1, "n": len(samples)}


def counts(model: nn.Module) -> tuple[int, int]:
    """(parameters, nonzero parameters) of `model`, each shared tensor once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(int(torch.count_nonzero(p.detach())) for p in params)


def _flattened(value) -> bool:
    """Whether `value` is a tensor subclass stored as other tensors (a semi-structured sparse weight)."""
    return isinstance(value, torch.Tensor) and type(value) not in (torch.Tensor, nn.Parameter) and hasattr(value, "__tensor_flatten__")


def _serialisable(state: dict) -> dict:
    """`state`, its tensor subclasses (semi-structured sparse weights) replaced by the tensors they are stored in."""
    if not any(_flattened(v) for v in state.values()):
        return state
    out = type(state)()
    for key, value in state.items():
        if _flattened(value):
            names, _ = value.__tensor_flatten__()
            value = {name: getattr(value, name) for name in names if getattr(value, name) is not None}
        out[key] = value
    if hasattr(state, "_metadata"):  # the modules' versions, which torch.save writes too
        out._metadata = state._metadata
    return out


def state_bytes(model: nn.Module) -> bytes:
    """What torch.save writes for the model's state dict (a sparse weight as the tensors it is stored in)."""
    buffer = io.BytesIO()
    torch.save(_serialisable(model.state_dict()), buffer)
    return buffer.getvalue()


def compressed_size(data: bytes) -> int:
    """Bytes of `data` through zlib (`COMPRESSION`)."""
    return len(zlib.compress(data, ZLIB_LEVEL))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(calls: dict[str, Callable[[], object]], device: torch.device, warmup: int = WARMUP,
          repetitions: int = REPETITIONS) -> dict[str, list[float]]:
    """Seconds of each call, `repetitions` times after `warmup` untimed calls, the calls taking turns.

    Repetition i calls the variants in an order rotated by i, so that none is
    always first after another; on CUDA the device is synchronised around
    every call, so a time is the call's work, not its launch.
    """
    if repetitions < 1 or warmup < 0:
        raise ValueError(f"repetitions must be >= 1 and warmup >= 0, got {repetitions} and {warmup}")
    names = list(calls)
    with torch.no_grad():
        for _ in range(warmup):
            for name in names:
                calls[name]()
        synchronize(device)
        times = {name: [] for name in names}
        for i in range(repetitions):
            for name in names[i % len(names):] + names[:i % len(names)]:
                synchronize(device)
                start = time.perf_counter()
                calls[name]()
                synchronize(device)
                times[name].append(time.perf_counter() - start)
    return times


CPU_PEAK = "peak resident set (VmHWM, reset through /proc/self/clear_refs) above the resident set before the batch"


def _status_kib(field_name: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise OSError(f"{STATUS} has no {field_name}")


def peak_here(call: Callable[[], object]) -> tuple[int | None, str]:
    """(bytes by which this process's peak resident set grew during `call`, how) or (None, why not).

    The peak (VmHWM) is reset to the resident set by writing "5" to
    /proc/self/clear_refs (Linux). Memory the allocator freed earlier in the
    process and reuses does not show: `peak_memory` runs it in a fresh process.
    """
    try:
        CLEAR_REFS.write_text("5")
        before = _status_kib("VmHWM")  # just reset: the resident set now
    except (OSError, ValueError) as e:
        return None, f"the peak resident set cannot be reset here ({type(e).__name__}: {e})"
    with torch.no_grad():
        call()
    return 1024 * (_status_kib("VmHWM") - before), CPU_PEAK


def peak_memory(net: nn.Module, inputs: torch.Tensor, device: torch.device) -> tuple[int | None, str]:
    """(bytes that one call of `net` on `inputs` needs at its peak, how it was measured), or (None, why not).

    CUDA: max_memory_allocated during the call above memory_allocated before
    it. CPU: `peak_here` in a fresh Python process that holds only the model
    and the inputs (`python -m lib.inference FILE`), so that memory this
    process freed and keeps for reuse does not hide the call's needs.
    """
    if device.type == "cuda":
        with torch.no_grad():
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            net(inputs)
            synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, "CUDA max_memory_allocated above the allocation before the batch"
    with tempfile.TemporaryDirectory(prefix="peak-") as tmp:
        path = Path(tmp) / "call.pt"
        try:
            torch.save({"net": net, "inputs": inputs, "threads": torch.get_num_threads()}, path)
        except (AttributeError, TypeError, pickle.PicklingError) as e:  # a class defined inside a function, ...
            return None, f"the model cannot be handed to a fresh process ({type(e).__name__}: {e})"
        done = subprocess.run([sys.executable, "-m", "lib.inference", str(path)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"the measuring process failed (exit {done.returncode}: {last})"
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return answer["bytes"], answer["how"]


def _measure_file(path: str) -> None:
    """The fresh process of `peak_memory`: load the model and inputs, one call, print {"bytes", "how"} as JSON."""
    payload = torch.load(path, weights_only=False)
    torch.set_num_threads(payload["threads"])
    net, inputs = payload["net"].eval(), payload["inputs"]
    peak, how = peak_here(lambda: net(inputs))
    print(json.dumps({"bytes": peak, "how": how if peak is None else f"{how}, in a fresh process holding the model and the batch"}))


def first_output(out):
    """A model's main output: the tensor itself, or the first element of a tuple (GPT-2's logits)."""
    return out[0] if isinstance(out, (tuple, list)) else out


# -- helpers for trainers ----------------------------------------------------------------------
def first_examples(dataset, batch: int) -> torch.Tensor:
    """The inputs of `dataset`'s first `batch` examples (cycled when it holds fewer), stacked."""
    return torch.stack([dataset[i % len(dataset)][0] for i in range(batch)])


def classifier_quality(model: nn.Module, val_set, device: torch.device, batch_size: int = 256) -> dict:
    """Validation accuracy (%) and mean cross-entropy of an image classifier (lib.classifier.evaluate)."""
    from torch.utils.data import DataLoader

    from lib.classifier import evaluate

    loss, accuracy = evaluate(model, DataLoader(val_set, batch_size=batch_size, shuffle=False), device)
    return {"accuracy": accuracy, "val_loss": loss}


# -- variants -------------------------------------------------------------------------------------
class Cast(nn.Module):
    """`model` fed floating inputs in `dtype` (token ids stay as they are)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x, *rest):
        return self.model(x.to(self.dtype) if x.is_floating_point() else x, *rest)


@dataclass
class Variant:
    """One model to measure: `net` is what is called (maybe a `Cast`), `model` what is counted and saved."""

    name: str
    model: nn.Module
    args: argparse.Namespace  # whose validation data `quality` reads (the dense baseline's own)
    reference: str | None = "dense"  # the like-for-like comparison (every variant also gets ratios against dense)
    note: str = ""
    dtype: torch.dtype = torch.float32
    counted: tuple[int, int] | None = None  # (params, nonzeros) when the model cannot count itself (sparse tensors)
    extra: dict = field(default_factory=dict)

    @property
    def net(self) -> nn.Module:
        return self.model if self.dtype == torch.float32 else Cast(self.model, self.dtype)


def sparse_support(device: torch.device) -> str | None:
    """None when `device` runs torch's 2:4 semi-structured kernels, else why not."""
    if device.type != "cuda":
        return f"unsupported on {device.type}"
    if torch.version.hip:
        return "unsupported on ROCm (torch's semi-structured kernels are CUDA's)"
    capability = torch.cuda.get_device_capability(device)
    if capability < SPARSE_MIN_CAPABILITY:
        return f"unsupported on this GPU (compute capability {capability[0]}.{capability[1]} < 8.0)"
    return None


def fits_2_of_4(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive inputs of a [out, in] weight holds at most 2 nonzeros."""
    return weight.dim() == 2 and weight.shape[1] % 4 == 0 and \
        bool(((weight.reshape(-1, 4) != 0).sum(dim=1) <= 2).all())


def to_sparse_2_of_4(model: nn.Module) -> tuple[list[str], list[str]]:
    """Turn every Linear weight that fits 2:4 (and is no embedding's) into a semi-structured sparse tensor, in place.

    Returns (converted layers, layers left dense with the reason). The model
    must be on a CUDA device in float16.
    """
    from torch.sparse import to_sparse_semi_structured

    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    converted, left = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        weight = module.weight.detach()
        if id(module.weight) in embedding_weights:
            left.append(f"{name}: tied to an embedding")
        elif not fits_2_of_4(weight):
            left.append(f"{name}: not 2:4 sparse")
        else:
            try:
                module.weight = nn.Parameter(to_sparse_semi_structured(weight.contiguous()), requires_grad=False)
                converted.append(name)
            except RuntimeError as e:  # shapes the kernels do not take
                left.append(f"{name}: {str(e).splitlines()[0]}")
    return converted, left


# -- one completed run ---------------------------------------------------------------------------
def trainer_of(model_name: str):
    """The trainer module of a model (`<model>.train`)."""
    try:
        return importlib.import_module(f"{model_name}.train")
    except ModuleNotFoundError:
        raise ValueError(f"no trainer for model {model_name!r} (no module {model_name}.train)") from None


def run_args(run_dir: Path) -> tuple[object, argparse.Namespace, dict]:
    """(trainer module, parsed args, metrics.json) of a run, from run.json's argv and metrics.json's model."""
    record, metrics = read_json(run_dir / "run.json") or {}, read_json(run_dir / "metrics.json") or {}
    if not metrics.get("model") or not record.get("argv"):
        raise ValueError(f"{run_dir} has no metrics.json model or run.json argv; is it a run directory?")
    trainer = trainer_of(metrics["model"])
    argv = list(record["argv"])
    if argv and not argv[0].startswith("-"):  # the trainer's path, as sys.argv has it
        argv = argv[1:]
    try:
        args = trainer.parse_args(argv)
    except SystemExit:
        raise ValueError(f"{run_dir}/run.json's argv no longer parses with {metrics['model']}.train "
                         "(see the message above); benchmark it with the code that trained it") from None
    return trainer, args, metrics


def load_model(run_dir: Path, trainer, args) -> tuple[nn.Module, str]:
    """The run's model on the CPU with its best.pt weights (checkpoint.pt's when there is no best.pt); (model, source)."""
    model = trainer.build_model(args)
    for name in ("best.pt", "checkpoint.pt"):
        path = run_dir / name
        if path.exists():
            model.load_state_dict(checkpoint.load(path)["model"])
            return model.eval(), name
    raise ValueError(f"{run_dir} has neither best.pt nor checkpoint.pt: no weights to benchmark")


def _shapes(model: nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def dense_candidates(run_dir: Path, metrics: dict) -> list[Path]:
    """Completed dense runs beside `run_dir` of its model and dataset, the likeliest baseline first.

    The fine-tune parent (run.json "parent") first, then the same optimizer
    and seed, the same optimizer, the same seed, any.
    """
    record = read_json(run_dir / "run.json") or {}
    parent = record.get("parent")
    parent_id = parent.get("run_id") if isinstance(parent, dict) else parent
    found = []
    for other in sorted(p for p in run_dir.parent.iterdir() if p.is_dir() and p != run_dir):
        m = read_json(other / "metrics.json") or {}
        if m.get("pruning") == "none" and m.get("model") == metrics.get("model") and \
                m.get("dataset") == metrics.get("dataset") and is_done(other):
            found.append((other.name != parent_id, m.get("optimizer") != metrics.get("optimizer"),
                          m.get("seed") != metrics.get("seed"), other))
    return [path for *_, path in sorted(found, key=lambda t: t[:3])]


def dense_baseline(run_dir: Path, metrics: dict, shapes: dict) -> tuple[Path | None, nn.Module | None, argparse.Namespace | None]:
    """(directory, model, args) of the first dense candidate whose weights fit `shapes`; Nones without one."""
    for other in dense_candidates(run_dir, metrics):
        trainer, args, _ = run_args(other)
        model, _ = load_model(other, trainer, args)
        if _shapes(model) == shapes:
            return other, model, args
    return None, None, None


def granularity_of(args, metrics: dict) -> str:
    """The run's pruning granularity: its flag, else its summary, else element."""
    value = getattr(args, "pruning_granularity", None) or ((metrics.get("final") or {}).get("pruning") or {}).get("granularity")
    return str(value or "element")


def _device(name: str | torch.device) -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no GPU is visible; use cpu or auto")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{device} ({torch.cuda.get_device_name(device)}, compute capability {major}.{minor})"
    return f"{device.type} ({os.cpu_count()} CPUs)"


def variants_of(run_dir: Path, trainer, args, metrics: dict, device: torch.device) -> tuple[list[Variant], dict, dict]:
    """The variants of a run (on the CPU), the variants it cannot measure {name: why}, and header fields."""
    model, weights = load_model(run_dir, trainer, args)
    header = {"weights": weights, "granularity": granularity_of(args, metrics)}
    if metrics.get("pruning") == "none":
        header["dense_source"] = "this run (a dense run: its own weights)"
        return [Variant("dense", model, args, reference=None)], {}, header
    dense_dir, dense, dense_args = dense_baseline(run_dir, metrics, _shapes(model))
    if dense is None:
        header["dense_source"] = ("this run's architecture with its own weights: no completed dense run of "
                                  f"{metrics['model']} on {metrics.get('dataset')} with the same shapes beside it")
        dense, dense_args = copy.deepcopy(model), args
    else:
        header["dense_source"] = f"{dense_dir.name} (the matrix's dense baseline of {metrics['model']} on {metrics.get('dataset')})"
    out = [Variant("dense", dense, dense_args, reference=None), Variant("pruned", model, args)]
    skipped = {}
    granularity = header["granularity"]
    if granularity == "channel":
        out.append(compact_variant(run_dir, model, trainer, args))
    elif ":" in granularity:
        why = sparse_support(device)
        if why:
            skipped["sparse_2:4"] = why
        else:
            half = copy.deepcopy(model).to(device).half()
            sparse = copy.deepcopy(half)
            converted, left = to_sparse_2_of_4(sparse)
            if converted:
                out.append(Variant("pruned_fp16", half, args, reference="dense", dtype=torch.float16,
                                   note="the reference of sparse 2:4: the same precision with dense kernels"))
                out.append(Variant("sparse_2:4", sparse, args, reference="pruned_fp16", dtype=torch.float16,
                                   counted=counts(half), extra={"converted": converted, "left_dense": left},
                                   note=f"{len(converted)} Linear weight(s) as 2:4 semi-structured tensors"))
            else:
                skipped["sparse_2:4"] = f"no Linear weight fits the 2:4 kernels ({'; '.join(left) or 'no Linear layer'})"
    return out, skipped, header


def compact_variant(run_dir: Path, model: nn.Module, trainer, args) -> Variant:
    """The pruned model with its all-zero units removed (on a copy), exported as <run dir>/compact.pt."""
    from lib.pruning import channels  # torch-pruning: only channel runs need it

    compact = copy.deepcopy(model)
    report = channels.compact(compact, trainer.example_inputs(args, 1))
    path = run_dir / "compact.pt"
    channels.export_compact(compact, path)
    return Variant("compact", compact.eval(), args, note=f"exported as {path.name}",
                   extra={"export": path.name, "compaction": _plain(report)})


def _plain(value):
    """`value` with tensors and numpy numbers as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def measure(variants: list[Variant], trainer, small: torch.Tensor, large: torch.Tensor, device: torch.device,
            warmup: int = WARMUP, repetitions: int = REPETITIONS) -> dict:
    """Every measure of every variant (module docstring), as {name: record}; the models end up on `device`."""
    for v in variants:
        v.model.to(device).eval()
    small, large = small.to(device), large.to(device)
    nets = {v.name: v.net for v in variants}
    latency = timed({n: (lambda net=net: net(small)) for n, net in nets.items()}, device, warmup, repetitions)
    batch = timed({n: (lambda net=net: net(large)) for n, net in nets.items()}, device, warmup, repetitions)
    with torch.no_grad():
        outputs = {n: first_output(net(large)).float() for n, net in nets.items()}
    records = {}
    for v in variants:
        data = state_bytes(v.model)
        params, nonzeros = v.counted or counts(v.model)
        peak, how = peak_memory(nets[v.name], large, device)
        record = {
            "label": LABELS[v.name],
            "dtype": str(v.dtype).replace("torch.", ""),
            "reference": v.reference,
            "params": params,
            "nonzeros": nonzeros,
            "size_bytes": len(data),
            "compressed_bytes": compressed_size(data),
            "latency_ms": spread([1000 * t for t in latency[v.name]]),
            "throughput_per_s": spread([len(large) / t for t in batch[v.name]]),
            "batch_ms": spread([1000 * t for t in batch[v.name]]),
            "peak_memory_mib": None if peak is None else peak / 2**20,
            "peak_memory_how": how,
            "quality": trainer.quality(v.net, v.args, device),
            **v.extra,
        }
        if v.note:
            record["note"] = v.note
        other = SAME_OUTPUTS.get(v.name)
        if other in outputs:
            record[f"max_abs_diff_vs_{other}"] = float((outputs[v.name] - outputs[other]).abs().max())
        records[v.name] = record
    dense = records.get("dense")
    for name, record in records.items():
        if name != "dense" and dense is not None:
            record.update(ratios(record, dense))
        if record["reference"] not in (None, "dense") and record["reference"] in records:
            record["vs_reference"] = {"variant": record["reference"], **ratios(record, records[record["reference"]])}
    return records


def ratios(record: dict, reference: dict) -> dict:
    """A variant against another: speed-up at batch 1 (median latencies), throughput ratio, size ratios."""
    return {"speedup": reference["latency_ms"]["median"] / record["latency_ms"]["median"],
            "throughput_ratio": record["throughput_per_s"]["median"] / reference["throughput_per_s"]["median"],
            "size_ratio": record["size_bytes"] / reference["size_bytes"],
            "compressed_ratio": record["compressed_bytes"] / reference["compressed_bytes"]}


def benchmarked(run_dir: str | os.PathLike) -> bool:
    """Whether the run's metrics.json holds an inference benchmark."""
    return bool(((read_json(Path(run_dir) / "metrics.json") or {}).get("inference") or {}).get("variants"))


def bench_run(run_dir: str | os.PathLike, *, device: str | torch.device = "auto", warmup: int = WARMUP,
              repetitions: int = REPETITIONS, batch: int | None = None) -> dict:
    """Benchmark a completed run (module docstring) and write metrics.json's "inference"; returns it.

    `batch`: the throughput batch (default: the run's --batch-size).
    """
    run_dir = Path(run_dir)
    if not is_done(run_dir):
        status = (read_json(run_dir / "run.json") or {}).get("status", "pending")
        raise ValueError(f"{run_dir.name} is not completed (status: {status}); only completed runs are benchmarked")
    device = _device(device)
    trainer, args, metrics = run_args(run_dir)
    batch = batch or args.batch_size
    if batch < 1 or repetitions < 1 or warmup < 0:
        raise ValueError(f"batch and repetitions must be >= 1 and warm-up >= 0, got {batch}, {repetitions} and {warmup}")
    variants, skipped, header = variants_of(run_dir, trainer, args, metrics, device)
    small, large = trainer.example_inputs(args, 1), trainer.example_inputs(args, batch)
    records = measure(variants, trainer, small, large, device, warmup, repetitions)
    records.update({name: {"label": LABELS[name], "unsupported": why} for name, why in skipped.items()})
    result = {
        "schema": SCHEMA,
        "measured": now(),
        "device": describe_device(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "repetitions": repetitions,
        "batch": {"latency": 1, "throughput": batch},
        "input": {"shape": list(large.shape[1:]), "dtype": str(large.dtype).replace("torch.", "")},
        **header,
        "timing": TIMING,
        "compression": COMPRESSION,
        "variants": {name: records[name] for name in VARIANTS if name in records},
    }
    current = read_json(run_dir / "metrics.json")  # as it is now: only "inference" changes
    current["inference"] = result
    write_json(run_dir / "metrics.json", current)
    return result


def after_run(run_dir: str | os.PathLike, device: torch.device) -> None:
    """A trainer's --bench-inference, once its run completed: benchmark it; a failure is a warning (the run stays completed)."""
    try:
        result = bench_run(run_dir, device=device)
    except Exception as e:  # the training result stands; `make bench-inference` can try again
        print(f"warning: inference benchmark of {Path(run_dir).name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return
    print(f"inference: {summary_line(result)}", flush=True)


def summary_line(result: dict) -> str:
    """One line per benchmark: each variant's latency at batch 1 and its speed-up."""
    parts = []
    for name, v in result["variants"].items():
        if "unsupported" in v:
            parts.append(f"{name} {v['unsupported']}")
        else:
            speed = f" ({v['speedup']:.2f}x)" if "speedup" in v else ""
            parts.append(f"{name} {v['latency_ms']['median']:.3f} ms{speed}")
    return ", ".join(parts)


if __name__ == "__main__":  # peak_memory's fresh process
    _measure_file(sys.argv[1])
