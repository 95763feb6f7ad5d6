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


class Display:
    """What the runner tells as runs start and end: plain lines, in the order things happen."""

    def __init__(self, matrix_dir, runs: list[dict], stream=None, live: bool | None = None):
        import sys

        self.runs, self.stream = runs, stream or sys.stdout
        self.number = {r["run_id"]: i for i, r in enumerate(runs, 1)}

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def skipped(self, run: dict, info: dict, why: str) -> None:
        self._line(f"{progress_line(self.number[run['run_id']], len(self.runs), run, info)}  ({why})")

    def started(self, run: dict, where: str) -> None:
        self._line(f"[{self.number[run['run_id']]}/{len(self.runs)}] {run['run_id']:<40s} started ({where})")

    def finished(self, run: dict, info: dict) -> None:
        self._line(progress_line(self.number[run["run_id"]], len(self.runs), run, info))

    def tick(self) -> None:
        """Between events: plain lines have nothing to add."""

    def close(self) -> None:
        self.stream.flush()
