"""benchmarks/pruning.py: a one-round run on LeNet-5 prints every method's row with its state bytes."""

from __future__ import annotations

import re

from benchmarks import pruning as bench


def test_one_round_on_lenet5_reports_every_method(capsys):
    bench.main(["--device", "cpu", "--models", "lenet5", "--rounds", "1", "--frequencies", "50,10"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split() and line.split()[0] in bench.METHODS}
    assert set(rows) == set(bench.METHODS) and not any("/torch" in label for label in rows)
    number = re.compile(r"^[+-]?\d+(\.\d+)?%?$")
    for label, cells in rows.items():
        assert all(number.match(c) for c in cells), (label, cells)
        assert cells[-1] == {"none": "0.00", "movement": "5.00", "torch-prune": "8.00"}.get(label, "1.00")
    assert len(rows["magnitude"]) == 8  # step, vs dense, hooks, in-hook, update, @50, @10, bytes/param
    assert re.search(r"@50\s+@10", out)


def test_the_default_interval_is_fifty_steps():
    cases = bench.build_cases("lenet5", bench.parse_args(["--device", "cpu"]), bench.torch.device("cpu"))
    assert {c.pruner.frequency for c in cases if c.pruner is not None} == {50}


def test_the_table_keeps_its_columns_apart_for_any_number(capsys):
    from types import SimpleNamespace

    def case(label, step, pruner=None):
        return SimpleNamespace(label=label, step_times=[step], tail_times=[step / 2], hook_times=[0.001],
                               update_times=[step * 400], pruner=pruner, bytes_per_param=123456.5)

    dense = case("none", 0.001)
    bench.report("huge", [dense, case("magnitude", 0.2, pruner=object())], [1, 50], 10**6)
    lines = capsys.readouterr().out.splitlines()
    header, _, slow = lines[-3], lines[-2], lines[-1]
    assert header.split() == ["method", "step", "ms", "vs", "dense", "hooks", "ms", "in-hook", "ms", "update", "ms",
                              "@1", "@50", "bytes/param"]
    cells = slow.split()
    assert cells[0] == "magnitude" and len(cells) == 9  # a +8009950.0 % overhead still leaves a space on each side
    assert cells[6] == "+8009950.0%" and cells[-1] == "123456.50"  # (0.0995 s + 80 s / 1) / 0.001 s
