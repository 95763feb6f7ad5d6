"""Shared library of the pruning harness: config, matrix, data, optimizers, pruning, engine, results."""
