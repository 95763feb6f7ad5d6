"""make bench-inference and --bench-inference on real LeNet-5 runs; the report's inference table and figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fake_matrix import seeded_matrix

from conftest import REPO
from lib import inference
from lib.results import read_json, write_json
from scripts import evidence, figures, graphs, report

DENSE, CHANNEL, NM, PENDING = "lenet5_sgd_none", "lenet5_sgd_magnitude_channel_40", "lenet5_sgd_magnitude_2of4_50", "lenet5_adamw_none"
FLAGS = {
    DENSE: [],
    CHANNEL: ["--pruning-method", "magnitude", "--target-sparsity", "0.4", "--pruning-granularity", "channel", "--bench-inference"],
    NM: ["--pruning-method", "magnitude", "--target-sparsity", "0.5", "--pruning-granularity", "2:4"],
}
MEASURES = {"label", "dtype", "reference", "params", "nonzeros", "size_bytes", "compressed_bytes", "latency_ms",
            "throughput_per_s", "batch_ms", "peak_memory_mib", "peak_memory_how", "quality"}
QUICK = ["--repetitions", "3", "--warmup", "1"]


def train(mdir: Path, run_id: str) -> None:
    argv = [sys.executable, "-m", "lenet5.train", "--output-dir", str(mdir / run_id), "--epochs", "1", "--batch-size", "64",
            "--optimizer", "sgd", *FLAGS[run_id]]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    if "--bench-inference" in argv:
        assert "inference: dense " in done.stdout and "compact " in done.stdout, done.stdout[-2000:]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> SimpleNamespace:
    """A matrix of real 1-epoch LeNet-5 runs (dense, channel with --bench-inference, 2:4; one never run), then the script."""
    mdir = tmp_path_factory.mktemp("bench") / "20260101-000000-test"
    write_json(mdir / "matrix.json", {"id": mdir.name, "runs": [{"run_id": r, "spec": {"model": "lenet5", "seed": 1}}
                                                               for r in (DENSE, CHANNEL, NM, PENDING)]})
    for run_id in (DENSE, CHANNEL, NM):
        train(mdir, run_id)
    hooked = read_json(mdir / CHANNEL / "metrics.json")["inference"]
    finals = {r: read_json(mdir / r / "metrics.json")["final"] for r in (DENSE, NM)}
    script = subprocess.run([sys.executable, "-m", "scripts.bench_inference", "--results", str(mdir), *QUICK],
                            cwd=REPO, capture_output=True, text=True)
    return SimpleNamespace(dir=mdir, hooked=hooked, finals=finals, script=script)


def metrics(matrix, run_id: str) -> dict:
    return read_json(matrix.dir / run_id / "metrics.json")


@pytest.mark.e2e
def test_the_trainer_flag_benchmarks_a_channel_run_with_its_compact_model(matrix):
    i = matrix.hooked
    for key in ("schema", "measured", "device", "torch", "threads", "warmup", "repetitions", "batch", "input", "weights",
                "granularity", "dense_source", "timing", "compression", "variants"):
        assert key in i, key
    assert i["device"].startswith("cpu") and i["threads"] >= 1 and i["repetitions"] == inference.REPETITIONS
    assert i["granularity"] == "channel" and i["dense_source"].startswith(f"{DENSE} (the matrix's dense baseline")
    assert i["batch"] == {"latency": 1, "throughput": 64} and i["input"] == {"shape": [1, 32, 32], "dtype": "float32"}
    v = i["variants"]
    assert list(v) == ["dense", "pruned", "compact"]
    for name, record in v.items():
        assert MEASURES <= set(record), (name, MEASURES - set(record))
        assert record["latency_ms"]["median"] > 0 and record["throughput_per_s"]["median"] > 0
        assert 0 <= record["quality"]["accuracy"] <= 100 and record["quality"]["val_loss"] > 0
    assert v["pruned"]["nonzeros"] < v["dense"]["nonzeros"] == v["dense"]["params"] == v["pruned"]["params"]
    assert v["compact"]["params"] < v["pruned"]["params"] and v["compact"]["size_bytes"] < v["pruned"]["size_bytes"]
    assert v["compact"]["max_abs_diff_vs_pruned"] < 1e-5
    assert v["compact"]["quality"]["accuracy"] == pytest.approx(v["pruned"]["quality"]["accuracy"])
    assert v["compact"]["export"] == "compact.pt" and {"speedup", "size_ratio", "compressed_ratio"} <= set(v["compact"])


LOAD_COMPACT = """
import sys, torch
model = torch.load(sys.argv[1], weights_only=False).eval()
assert not [m for m in sys.modules if m.startswith(("lib.pruning", "torch_pruning"))], "the harness's pruning code was loaded"
torch.save(model(torch.load(sys.argv[2])), sys.argv[3])
"""


@pytest.mark.e2e
def test_compact_pt_loads_without_the_pruning_code_and_computes_what_the_pruned_model_does(matrix, tmp_path):
    trainer, args, _ = inference.run_args(matrix.dir / CHANNEL)
    pruned, _ = inference.load_model(matrix.dir / CHANNEL, trainer, args)
    x = trainer.example_inputs(args, 16)
    torch.save(x, tmp_path / "x.pt")
    done = subprocess.run([sys.executable, "-c", LOAD_COMPACT, str(matrix.dir / CHANNEL / "compact.pt"), str(tmp_path / "x.pt"),
                           str(tmp_path / "y.pt")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        assert float((torch.load(tmp_path / "y.pt") - pruned(x)).abs().max()) < 1e-5


@pytest.mark.e2e
def test_the_script_benchmarks_the_rest_once_and_leaves_the_rest_of_metrics_json(matrix):
    out = matrix.script.stdout
    assert matrix.script.returncode == 0, matrix.script.stderr[-2000:]
    assert out.index(f"{DENSE}: dense ") < out.index(f"{NM}: dense ")  # the dense baseline first
    assert f"{CHANNEL}: already benchmarked" in out and f"{PENDING}: not completed (pending), left alone" in out
    assert f"benchmarked 2 run(s) of {matrix.dir}" in out
    dense = metrics(matrix, DENSE)["inference"]
    assert list(dense["variants"]) == ["dense"] and dense["dense_source"].startswith("this run")
    nm = metrics(matrix, NM)
    assert nm["final"] == matrix.finals[NM] and metrics(matrix, DENSE)["final"] == matrix.finals[DENSE]
    v = nm["inference"]["variants"]
    assert list(v) == ["dense", "pruned", "sparse_2:4"] and nm["inference"]["granularity"] == "2:4"
    assert v["sparse_2:4"] == {"label": "sparse 2:4", "unsupported": "unsupported on cpu"}
    assert nm["inference"]["repetitions"] == 3 and v["pruned"]["latency_ms"]["n"] == 3
    assert v["pruned"]["compressed_bytes"] < v["dense"]["compressed_bytes"]
    assert not (matrix.dir / NM / "compact.pt").exists()


@pytest.mark.e2e
def test_make_bench_inference_force_measures_again_only_the_chosen_runs(matrix, make):
    before = {r: metrics(matrix, r)["inference"]["measured"] for r in (DENSE, NM)}
    stamp = metrics(matrix, CHANNEL)["inference"]
    result = make("bench-inference", f"RESULTS={matrix.dir}", "ONLY=*channel*", "FORCE=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{CHANNEL}: dense " in result.stdout and "benchmarked 1 run(s)" in result.stdout
    again = metrics(matrix, CHANNEL)["inference"]
    assert again["measured"] >= stamp["measured"] and again["variants"]["compact"]["latency_ms"] != stamp["variants"]["compact"]["latency_ms"]
    assert {r: metrics(matrix, r)["inference"]["measured"] for r in (DENSE, NM)} == before
    result = make("bench-inference", f"RESULTS={matrix.dir}", "ONLY=nothing*")
    assert result.returncode == 2 and "no run of" in result.stderr


@pytest.mark.e2e
def test_the_report_and_figure_show_the_benchmarks(matrix, monkeypatch):
    seen, save = {}, figures._save

    def check(fig, path):
        visible = [ax for ax in fig.axes if ax.axison]
        seen[path.stem] = bool(visible) and all(ax.lines for ax in visible)
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", check)
    drawn = graphs.draw(matrix.dir)
    assert matrix.dir / "graphs" / "lenet5_inference.png" in drawn and seen["lenet5_inference"]
    text = (matrix.dir / "report.md").read_text()
    assert "## Inference" in text and "### lenet5: inference" in text
    assert f"| {CHANNEL} | compact | " in text and f"| {CHANNEL} | dense ({DENSE}) | " in text
    assert f"| {NM} | sparse 2:4: unsupported on cpu | " in text and f"| {DENSE} | dense (own weights) | " in text
    assert "![lenet5_inference](graphs/lenet5_inference.png)" in text


# -- the report and figure from hand-written benchmarks (fast) -----------------------------------------
def variant(label: str, params: int, nonzeros: int, latency: float, quality: dict, **extra) -> dict:
    return {"label": label, "dtype": "float32", "reference": None if label == "dense" else "dense", "params": params,
            "nonzeros": nonzeros, "size_bytes": 4 * params + 900, "compressed_bytes": 4 * nonzeros + 500,
            "latency_ms": {"median": latency, "q1": latency * 0.9, "q3": latency * 1.2, "iqr": latency * 0.3, "n": 30},
            "throughput_per_s": {"median": 100.0 / latency, "q1": 1.0, "q3": 2.0, "iqr": 1.0, "n": 30},
            "batch_ms": {"median": 1.0, "q1": 1.0, "q3": 1.0, "iqr": 0.0, "n": 30},
            "peak_memory_mib": 12.5, "peak_memory_how": "test", "quality": quality, **extra}


def add_inference(run_dir: Path, key: str, value: float, granularity: str = "channel") -> None:
    m = read_json(run_dir / "metrics.json")
    dense = variant("dense", 1000, 1000, 2.0, {key: value + 1, "val_loss": 1.0})
    pruned = variant("pruned as stored", 1000, 500, 2.0, {key: value, "val_loss": 1.0}, speedup=1.0, throughput_ratio=1.0,
                     size_ratio=1.0, compressed_ratio=0.6)
    variants = {"dense": dense, "pruned": pruned}
    if granularity == "channel":
        variants["compact"] = variant("compact", 500, 500, 1.0, {key: value, "val_loss": 1.0}, speedup=2.0,
                                      throughput_ratio=1.9, size_ratio=0.5, compressed_ratio=0.55)
    else:
        variants["sparse_2:4"] = {"label": "sparse 2:4", "unsupported": "unsupported on cpu"}
    m["inference"] = {"device": "cpu (2 CPUs)", "threads": 2, "repetitions": 30, "warmup": 5, "batch": {"latency": 1, "throughput": 32},
                      "dense_source": "lenet5_sgd_none (the matrix's dense baseline of lenet5 on d)", "variants": variants}
    write_json(run_dir / "metrics.json", m)


def test_the_inference_table_and_figure_from_benchmarked_runs(tmp_path):
    mdir = seeded_matrix(tmp_path / "m", seeds=(1,))
    add_inference(mdir / "lenet5_sgd_magnitude_50", "accuracy", 89.0)
    add_inference(mdir / "lenet5_sgd_magnitude_90", "accuracy", 80.0, granularity="2:4")
    add_inference(mdir / "gpt2_adamw_movement_50", "perplexity", 48.0)
    drawn = graphs.draw(mdir)
    assert {mdir / "graphs" / f"{m}_inference.png" for m in ("lenet5", "gpt2")} <= set(drawn)
    text = (mdir / "report.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| lenet5_sgd_magnitude_50 | compact |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:] == ["500", "500", "2.8 KiB", "2.4 KiB", "1.000 ± 0.300", "100 (32)", "12.5", "89.00", "2.00× / 1.90×", "0.50 / 0.55"]
    assert "| lenet5_sgd_magnitude_50 | dense (lenet5_sgd_none) | 1,000 | 1,000 |" in text
    assert "| lenet5_sgd_magnitude_90 | sparse 2:4: unsupported on cpu | - |" in text
    assert "### gpt2: inference" in text and "validation perplexity" in text.split("### gpt2: inference")[1].splitlines()[2]
    assert "Measured on cpu (2 CPUs), 2 threads, 30 repetitions after 5 warm-up calls." in text


def test_no_benchmark_no_inference_section_or_figure(tmp_path):
    mdir = seeded_matrix(tmp_path / "m", seeds=(1,))
    drawn = graphs.draw(mdir)
    assert not any(p.name.endswith("_inference.png") for p in drawn)
    assert "## Inference" not in (mdir / "report.md").read_text()
    assert report.inference_section(evidence.load(mdir)) == ""
