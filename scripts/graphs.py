"""Draw a matrix's figures and write its report, from the run files only; publish chosen figures.

usage:
  python -m scripts.graphs [--results DIR]                           draw (make update-graphs)
  python -m scripts.graphs --publish --results DIR [--images DIR]    publish (make publish-graphs)

Drawing reads DIR's runs (metrics.json, memory.json, run.json, matrix.json;
default DIR: the newest matrix under the results directory) and writes, for
each model, the figures that have something to show into DIR/graphs/:

  <model>_curves.png              validation quality over training, a panel per target sparsity
  <model>_metric_vs_sparsity.png  final quality against sparsity, a line per optimizer and method
  <model>_final.png               final quality per configuration (perplexity: bars; accuracy: points)
  <model>_sparsity.png            sparsity of the prunable weights over training
  <model>_layer_sparsity.png      final sparsity per layer and configuration (heat map)
  <model>_memory_peak.png         peak memory per configuration, grouped by method
  <model>_memory_time.png         memory over time from memory.json, train and eval phases shaded
  <model>_memory_vs_quality.png   final quality against peak memory
  <model>_state_bytes.png         optimizer and pruning state bytes per parameter, per method
  <model>_time.png                training time and throughput per configuration
  <model>_efficiency.png          quality per unit of memory and of training time
  <model>_inference.png           speed-up and size on disk against quality at inference (runs benchmarked
                                  by make bench-inference or --bench-inference)

and DIR/report.md: per model a table over its configurations (mean ± std
over seeds, the difference to the baseline, memory, time, throughput), the
inference benchmarks, the figures, the provenance and every run. Nothing outside DIR is written.
docs/graphs.md says how seeds are aggregated and how series are styled.

Publishing copies the figures a person chose, DIR/graphs/<model>_<name>.png,
to images/<model>/<name>.png (the tracked images the README shows). It needs
an explicit --results: which matrix to show is a decision, not a default.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from lib import fs_errors
from lib.results import MatrixError, open_matrix
from scripts import evidence, figures, report


def draw(matrix_dir: Path) -> list[Path]:
    """Every model's figures into matrix_dir/graphs/ and matrix_dir/report.md; the figures drawn."""
    matrix_dir = Path(matrix_dir)
    matrix = evidence.load(matrix_dir)
    out = matrix_dir / "graphs"
    out.mkdir(exist_ok=True)
    drawn = []
    for model in matrix.models():
        runs = [r for c in matrix.configs(model) for r in c.runs]
        drawn += figures.draw_model(matrix, model, evidence.quality(runs), out)
    report.write(matrix_dir, matrix, drawn)
    print(f"graphs: {len(drawn)} in {out}; report: {matrix_dir / 'report.md'}")
    return drawn


def publish(matrix_dir: Path, images_dir: Path = Path("images")) -> list[Path]:
    """Copy the drawn matrix_dir/graphs/<model>_<name>.png to images_dir/<model>/<name>.png; the files written."""
    graphs_dir = matrix_dir / "graphs"
    models = evidence.load(matrix_dir).models()
    sources = [(model, name, graphs_dir / f"{model}_{name}.png") for model in models for name in figures.FIGURES]
    sources = [(model, name, src) for model, name, src in sources if src.is_file()]
    undrawn = [model for model in models if not any(m == model for m, _, _ in sources)]
    if not models or undrawn:
        raise MatrixError(
            f"{graphs_dir} lacks the figures of {', '.join(undrawn) or 'any model'}; "
            f"draw them first: make update-graphs RESULTS={matrix_dir}"
        )
    written = []
    for model, name, src in sources:
        (images_dir / model).mkdir(parents=True, exist_ok=True)
        dest = images_dir / model / f"{name}.png"
        shutil.copyfile(src, dest)
        written.append(dest)
    print(f"published {len(written)} graphs of {matrix_dir.name} to {images_dir}/ ({', '.join(models)}); commit them to show them")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", help="matrix directory (default for drawing: the newest under the results directory)")
    p.add_argument("--publish", action="store_true", help="copy DIR/graphs/ to the images directory instead of drawing")
    p.add_argument("--images", default="images", help="--publish: where published graphs go (default: images)")
    args = p.parse_args(argv)
    from lib.config import ConfigError

    try:
        if args.publish and not args.results:
            raise MatrixError("publishing needs the matrix to publish: make publish-graphs RESULTS=results/<id>")
        matrix_dir, _ = open_matrix(args.results)
        if args.publish:
            publish(matrix_dir, Path(args.images))
        elif evidence.load(matrix_dir).runs:
            draw(matrix_dir)
        else:
            raise MatrixError(f"{matrix_dir} has no run with metrics yet; nothing to draw")
    except (MatrixError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full matrix directory
        print(f"error: {fs_errors.explain(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
