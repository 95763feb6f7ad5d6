"""Shared library of the pruning harness: config, matrix, data, optimizers, pruning, run lifecycle, classifier loop, results."""
