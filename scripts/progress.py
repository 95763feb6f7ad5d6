"""What a running matrix prints: one line per run as it ends, and the headline figure of a finished run."""

from __future__ import annotations


def headline(info: dict) -> tuple[str, str, float, float | None]:
    """(name, unit, final, best) of a finished run: accuracy for classifiers, perplexity for language models."""
    if "accuracy" in info:
        return "acc", "%", info["accuracy"], info.get("best_accuracy")
    return "ppl", "", info.get("perplexity", float("nan")), info.get("best_perplexity")


def progress_line(i: int, n: int, run: dict, info: dict) -> str:
    head = f"[{i}/{n}] {run['run_id']:<40s} {info['status']}"
    if info["status"] == "completed":
        name, unit, final, _ = headline(info)
        return f"{head:<62s} {name} {final:.2f}{unit}  sparsity {100 * info['sparsity_prunable']:.1f}%  {info['train_time_s']:.1f}s"
    return f"{head}  {info.get('error') or ''}".rstrip()
