"""lib.inference: the measurements on tiny models (spread, counts, sizes, timing, peak memory), variants, baselines, errors."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from conftest import REPO
from lib import inference
from lib.results import write_json


def tiny(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()


def zero_out(model: nn.Module, fraction: float) -> nn.Module:
    """Zero the smallest `fraction` of every Linear weight (as a magnitude pruner leaves it)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                w = m.weight
                k = int(fraction * w.numel())
                w.view(-1)[w.abs().view(-1).argsort()[:k]] = 0.0
    return model


# -- spread, counts, sizes -------------------------------------------------------------------
def test_spread_is_the_median_quartiles_and_interquartile_range():
    s = inference.spread([5.0, 1.0, 4.0, 2.0, 3.0])
    assert s == {"median": 3.0, "q1": 2.0, "q3": 4.0, "iqr": 2.0, "n": 5}
    s = inference.spread([4.0, 1.0, 3.0, 2.0])  # linear interpolation between order statistics
    assert (s["median"], s["q1"], s["q3"]) == (2.5, 1.75, 3.25) and s["iqr"] == pytest.approx(1.5)
    assert inference.spread([7.0])["iqr"] == 0.0
    with pytest.raises(ValueError, match="no samples"):
        inference.spread([])


def test_counts_are_parameters_and_nonzeros_each_tensor_once():
    model = tiny()
    with torch.no_grad():
        model[0].weight[:, :8] = 0.0  # 64 * 8 zeros
        model[2].bias.zero_()  # 8 zeros
    total = 32 * 64 + 64 + 64 * 8 + 8
    assert inference.counts(model) == (total, total - 64 * 8 - 8)
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    tied[1].weight = tied[0].weight
    assert inference.counts(tied) == (16, 16)


def test_state_bytes_are_what_torch_save_writes_and_compress_smaller_when_sparse():
    model = tiny()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = inference.state_bytes(model)
    assert len(data) == len(buffer.getvalue())
    loaded = torch.load(io.BytesIO(data), weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    assert inference.compressed_size(data) == len(zlib.compress(data, inference.ZLIB_LEVEL))

    sparse = zero_out(tiny(), 0.9)
    sparse_data = inference.state_bytes(sparse)
    assert len(sparse_data) == len(data)  # as stored: the same dense tensors
    assert inference.compressed_size(sparse_data) < 0.5 * inference.compressed_size(data) < len(data)


# -- timing and memory -------------------------------------------------------------------------
def test_timed_calls_every_variant_in_rotating_turns_and_returns_positive_seconds():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = inference.timed(fns, torch.device("cpu"), warmup=2, repetitions=4)
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t > 0 for v in times.values() for t in v)
    assert calls[:6] == ["a", "b", "c"] * 2  # warm-up
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    with pytest.raises(ValueError, match="repetitions must be >= 1"):
        inference.timed(fns, torch.device("cpu"), repetitions=0)


def test_timed_measures_real_work(one_thread):
    model, x = tiny(), torch.randn(64, 32)
    times = inference.timed({"m": lambda: model(x)}, torch.device("cpu"), warmup=1, repetitions=5)
    assert len(times["m"]) == 5 and min(times["m"]) > 0


def clear_refs_allowed() -> bool:
    try:
        inference.CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not clear_refs_allowed(), reason="no writable /proc/self/clear_refs here")
def test_peak_here_sees_the_memory_a_call_touches():
    # In a fresh process: in this long-lived one, memory freed by earlier tests is reused without raising the peak.
    code = ("import json, torch; from lib import inference; "
            "print(json.dumps(inference.peak_here(lambda: torch.ones(64 * 2**20 // 4).sum())))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    peak, how = json.loads(out.splitlines()[-1])
    assert peak >= 0.9 * 64 * 2**20 and "VmHWM" in how


@pytest.mark.skipif(not clear_refs_allowed(), reason="no writable /proc/self/clear_refs here")
def test_peak_memory_on_the_cpu_is_measured_in_a_fresh_process():
    net, x = nn.Linear(4, 2**19), torch.randn(32, 4)  # the output alone: 32 x 2**19 floats = 64 MiB
    peak, how = inference.peak_memory(net, x, torch.device("cpu"))
    assert peak >= 60 * 2**20 and "fresh process" in how


class Unimportable(nn.Module):  # the fresh process cannot import the test module that defines it
    def forward(self, x):
        return x


def test_a_model_the_fresh_process_cannot_take_is_none_with_the_reason():
    class Local(Unimportable):  # cannot even be pickled
        pass

    peak, how = inference.peak_memory(Local(), torch.zeros(1), torch.device("cpu"))
    assert peak is None and how.startswith("the model cannot be handed to a fresh process")
    peak, how = inference.peak_memory(Unimportable(), torch.zeros(1), torch.device("cpu"))
    assert peak is None and how.startswith("the measuring process failed (exit 1: ")


# -- variants ---------------------------------------------------------------------------------------
def test_2_of_4_fit_and_support():
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]])
    assert inference.fits_2_of_4(w)
    assert not inference.fits_2_of_4(torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    assert not inference.fits_2_of_4(torch.zeros(2, 6))  # inputs not a multiple of 4
    assert not inference.fits_2_of_4(torch.zeros(2, 4, 3, 3))  # a convolution
    assert inference.sparse_support(torch.device("cpu")) == "unsupported on cpu"


def test_cast_feeds_floating_inputs_in_its_dtype_and_token_ids_as_they_are():
    seen = []

    class Probe(nn.Module):
        def forward(self, x, *rest):
            seen.append((x.dtype, rest))
            return x

    cast = inference.Cast(Probe(), torch.float16)
    cast(torch.zeros(2))
    cast(torch.zeros(2, dtype=torch.long), "targets")
    assert seen == [(torch.float16, ()), (torch.long, ("targets",))]
    assert inference.first_output((torch.ones(1), None)).shape == (1,)


class FakeTrainer:
    """The trainer interface over a tiny regression: quality is the mean output."""

    @staticmethod
    def quality(model, args, device):
        with torch.no_grad():
            return {"accuracy": float(model(torch.ones(4, 32, device=device)).mean()), "val_loss": 1.0}


def test_measure_records_every_field_and_ratios_against_dense(one_thread, monkeypatch):
    monkeypatch.setattr(inference, "peak_memory", lambda net, x, device: (2**20, "measured"))  # tested above; a process each
    args = argparse.Namespace()
    dense, pruned = tiny(), zero_out(tiny(), 0.8)
    compact = nn.Sequential(*[m for m in pruned])  # the same modules: the same outputs
    variants = [inference.Variant("dense", dense, args, reference=None), inference.Variant("pruned", pruned, args),
                inference.Variant("compact", compact, args, note="a note")]
    records = inference.measure(variants, FakeTrainer, torch.randn(1, 32), torch.randn(16, 32), torch.device("cpu"),
                                warmup=1, repetitions=3)
    assert list(records) == ["dense", "pruned", "compact"]
    for name, r in records.items():
        assert r["params"] == 32 * 64 + 64 + 64 * 8 + 8 and r["size_bytes"] > r["compressed_bytes"] > 0
        assert r["latency_ms"]["n"] == 3 and r["latency_ms"]["median"] > 0 and r["throughput_per_s"]["median"] > 0
        assert r["quality"]["val_loss"] == 1.0 and r["label"] == inference.LABELS[name] and r["dtype"] == "float32"
        assert r["peak_memory_mib"] == 1.0 and r["peak_memory_how"] == "measured"
    assert "speedup" not in records["dense"]
    p = records["pruned"]
    assert p["nonzeros"] < 0.3 * p["params"] and p["compressed_bytes"] < records["dense"]["compressed_bytes"]
    assert p["speedup"] == pytest.approx(records["dense"]["latency_ms"]["median"] / p["latency_ms"]["median"])
    assert p["size_ratio"] == 1.0 and p["compressed_ratio"] < 1.0
    assert records["compact"]["max_abs_diff_vs_pruned"] == 0.0 and records["compact"]["note"] == "a note"


def test_ratios():
    ref = {"latency_ms": {"median": 2.0}, "throughput_per_s": {"median": 100.0}, "size_bytes": 1000, "compressed_bytes": 500}
    var = {"latency_ms": {"median": 1.0}, "throughput_per_s": {"median": 150.0}, "size_bytes": 400, "compressed_bytes": 100}
    assert inference.ratios(var, ref) == {"speedup": 2.0, "throughput_ratio": 1.5, "size_ratio": 0.4, "compressed_ratio": 0.2}


# -- runs on disk -----------------------------------------------------------------------------------
def fake_run(mdir, run_id, *, pruning="none", optimizer="sgd", seed=1, dataset="digits", model="lenet5",
             status="completed", parent=None):
    record = {"run_id": run_id, "status": status, "seed": seed, "argv": ["lenet5/train.py", "--optimizer", optimizer]}
    if parent:
        record["parent"] = {"run_id": parent}
    write_json(mdir / run_id / "run.json", record)
    write_json(mdir / run_id / "metrics.json", {"run_id": run_id, "model": model, "dataset": dataset, "pruning": pruning,
                                                 "optimizer": optimizer, "seed": seed, "history": [{"epoch": 1}],
                                                 "final": {"accuracy": 1.0, "sparsity_prunable": 0.0, "train_time_s": 1.0}})
    return mdir / run_id


def test_dense_candidates_prefer_the_parent_then_the_same_optimizer_and_seed(tmp_path):
    run = fake_run(tmp_path, "lenet5_sgd_magnitude_50_s2", pruning="magnitude", seed=2)
    for rid, opt, seed in (("lenet5_adamw_none_s1", "adamw", 1), ("lenet5_sgd_none_s1", "sgd", 1),
                           ("lenet5_adamw_none_s2", "adamw", 2), ("lenet5_sgd_none_s2", "sgd", 2)):
        fake_run(tmp_path, rid, optimizer=opt, seed=seed)
    fake_run(tmp_path, "lenet5_sgd_none_s3", seed=3, status="failed")  # not completed
    fake_run(tmp_path, "lenet5_sgd_none_mnist", dataset="mnist")  # another dataset
    fake_run(tmp_path, "gpt2_sgd_none", model="gpt2")  # another model
    metrics = {"model": "lenet5", "dataset": "digits", "optimizer": "sgd", "seed": 2}
    assert [p.name for p in inference.dense_candidates(run, metrics)] == [
        "lenet5_sgd_none_s2", "lenet5_sgd_none_s1", "lenet5_adamw_none_s2", "lenet5_adamw_none_s1"]
    child = fake_run(tmp_path, "lenet5_adamw_none_s1_ft_magnitude_50", pruning="magnitude", parent="lenet5_adamw_none_s1")
    assert inference.dense_candidates(child, {**metrics, "seed": 1})[0].name == "lenet5_adamw_none_s1"


def test_granularity_comes_from_the_flag_else_the_summary_else_element():
    assert inference.granularity_of(argparse.Namespace(pruning_granularity="2:4"), {}) == "2:4"
    assert inference.granularity_of(argparse.Namespace(), {"final": {"pruning": {"granularity": "channel"}}}) == "channel"
    assert inference.granularity_of(argparse.Namespace(), {"final": {}}) == "element"


def test_an_unfinished_run_is_refused_in_one_line(tmp_path):
    run = fake_run(tmp_path, "lenet5_sgd_none", status="running")
    with pytest.raises(ValueError, match=r"lenet5_sgd_none is not completed \(status: running\)"):
        inference.bench_run(run)
    with pytest.raises(ValueError, match="not completed"):
        inference.bench_run(tmp_path / "nowhere")


def test_run_args_parse_the_recorded_argv_with_the_models_trainer(tmp_path):
    run = fake_run(tmp_path, "lenet5_sgd_none")
    trainer, args, metrics = inference.run_args(run)
    assert trainer.__name__ == "lenet5.train" and args.optimizer == "sgd" and metrics["model"] == "lenet5"
    write_json(run / "run.json", {"status": "completed", "argv": ["lenet5/train.py", "--no-such-flag"]})
    with pytest.raises(ValueError, match="argv no longer parses with lenet5.train"):
        inference.run_args(run)
    write_json(run / "metrics.json", {"model": "alexnet", "final": {}})
    with pytest.raises(ValueError, match="no trainer for model 'alexnet'"):
        inference.run_args(run)


def test_a_run_without_weights_says_so(tmp_path):
    run = fake_run(tmp_path, "lenet5_sgd_none")
    trainer, args, _ = inference.run_args(run)
    with pytest.raises(ValueError, match="neither best.pt nor checkpoint.pt"):
        inference.load_model(run, trainer, args)


def test_first_examples_cycle_a_small_set():
    data = torch.utils.data.TensorDataset(torch.arange(3.0).view(3, 1), torch.zeros(3))
    assert inference.first_examples(data, 5).flatten().tolist() == [0.0, 1.0, 2.0, 0.0, 1.0]


def test_plain_turns_tensors_and_numpy_numbers_into_json_values():
    assert inference._plain({"a": torch.tensor([1, 2]), "b": (np.int64(3), {"c": np.float32(0.5)})}) == \
        {"a": [1, 2], "b": [3, {"c": 0.5}]}
