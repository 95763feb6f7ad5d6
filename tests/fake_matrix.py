"""Matrix directories written by hand for the evidence, figures and report tests: the trainers' file shapes, no training."""

from __future__ import annotations

from pathlib import Path

from lib.results import write_json

LAYERS = {"features.0.weight": 150, "classifier.1.weight": 48000}


def fake_run(mdir: Path, run_id: str, optimizer: str, pruning: str, target: float, value: float, *, seed: int = 1,
             variant: str | None = None, lm: bool = False, memory: bool = True, done: bool = True) -> None:
    """metrics.json (history of 4 evaluations, a final block unless not `done`), run.json and, with `memory`, memory.json."""
    x, metric, final_key, rate = ("iter", "val_perplexity", "perplexity", "tokens_per_s") if lm else \
        ("epoch", "val_accuracy", "accuracy", "samples_per_s")
    history = [{x: i * (100 if lm else 1), "train_loss": 2.0 / i, "val_loss": 2.0 / i, metric: value * (5 - i if lm else i) / 4,
                "sparsity": target * min(1, i / 3), "lr": 0.01, "elapsed_s": float(i)} for i in range(1, 5)]
    params = sum(LAYERS.values())
    final = {
        final_key: value, f"best_{final_key}": value, "best_at": history[-1][x], "sparsity_prunable": target,
        "sparsity_global": target * 0.99, "train_time_s": 4.0 + seed / 10, "peak_memory_mib": 400.0 + 10 * seed,
        "params": params + 10, "nonzero_params": int(params * (1 - target)), rate: 1000.0 + seed,
        "layers": {n: {"params": p, "sparsity": target * (0.5 if n.startswith("features") else 1.0)} for n, p in LAYERS.items()},
        "optimizer_state_bytes": 8 * (params + 10) if optimizer != "sgd" else 4 * (params + 10),
    }
    if pruning != "none":
        final["pruning"] = {"method": pruning, "prunable_params": params, "state_bytes": params * (5 if pruning == "movement" else 1)}
    metrics = {"schema": 1, "run_id": run_id, "model": "gpt2" if lm else "lenet5", "dataset": "d", "optimizer": optimizer,
               "variant": variant, "pruning": pruning, "target_sparsity": target, "seed": seed, "history": history}
    if done:
        metrics["final"] = final
    write_json(mdir / run_id / "metrics.json", metrics)
    write_json(mdir / run_id / "run.json", {"run_id": run_id, "status": "completed" if done else "running", "seed": seed})
    if memory:
        phases = ["train"] * 4 + ["eval"] + ["train"] * 4 + ["eval", None]
        samples = [{"t": 0.5 * i, "phase": p, "rss_mib": 300.0 + 10 * i + seed} for i, p in enumerate(phases)]
        write_json(mdir / run_id / "memory.json", {
            "schema": 1, "run_id": run_id,
            "header": {"fields": {"rss_mib": "resident memory of the training process (MiB)"}},
            "summary": {"memory_field": "rss_mib", "peak_memory_mib": 400.0, "peak_memory_source": "process high-water mark"},
            "samples": samples,
        })


def matrix_json(mdir: Path, run_ids: list[tuple[str, str, int]], config: dict | None = None) -> None:
    """matrix.json with the planned runs (run id, model, seed) and the provenance fields."""
    write_json(mdir / "matrix.json", {
        "id": mdir.name, "defconfig": "test", "created": "2026-01-01T00:00:00+00:00", "config_hash": "abc123",
        "config": config or {}, "git": {"commit": "deadbeef", "dirty": True, "diff_file": "git.diff"},
        "python": "3.11.7", "torch": "2.9.0", "torchvision": "0.24.0", "host": "box", "platform": "Linux", "cpus": 2,
        "devices": ["cpu"], "overrides": {"--epochs": 2},
        "runs": [{"run_id": r, "spec": {"model": m, "seed": s}, "argv": []} for r, m, s in run_ids],
    })


def seeded_matrix(mdir: Path, seeds=(1, 2, 3), memory: bool = True, config: dict | None = None) -> Path:
    """LeNet-5: sgd and adamw dense and magnitude 50/90, adamwprune bitter7 state 90; GPT-2: adamw dense and movement 50."""
    planned = []
    cells = [("sgd", "none", 0.0, None, 90.0), ("sgd", "magnitude", 0.5, None, 89.0), ("sgd", "magnitude", 0.9, None, 80.0),
             ("adamw", "none", 0.0, None, 95.0), ("adamw", "magnitude", 0.5, None, 94.5), ("adamw", "magnitude", 0.9, None, 90.0),
             ("adamwprune", "state", 0.9, "bitter7", 91.0)]
    for opt, pruning, target, variant, value in cells:
        base = f"lenet5_{opt}" + (f"_{variant}" if variant else "") + f"_{pruning}" + (f"_{round(100 * target)}" if target else "")
        for seed in seeds:
            rid = f"{base}_s{seed}" if len(seeds) > 1 else base
            fake_run(mdir, rid, opt, pruning, target, value + 0.1 * seed, seed=seed, variant=variant, memory=memory)
            planned.append((rid, "lenet5", seed))
    for pruning, target, value in (("none", 0.0, 40.0), ("movement", 0.5, 48.0)):
        base = f"gpt2_adamw_{pruning}" + (f"_{round(100 * target)}" if target else "")
        for seed in seeds:
            rid = f"{base}_s{seed}" if len(seeds) > 1 else base
            fake_run(mdir, rid, "adamw", pruning, target, value + seed, seed=seed, lm=True, memory=memory)
            planned.append((rid, "gpt2", seed))
    matrix_json(mdir, planned, config)
    return mdir
