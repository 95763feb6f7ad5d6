"""benchmarks/structured.py: one round on LeNet-5 and GPT-2-tiny prints the parameters, both timings and an exact compaction."""

from __future__ import annotations

import re

import pytest

from benchmarks import structured as bench


def test_one_round_reports_parameters_latency_throughput_and_exactness(capsys):
    bench.main(["--models", "lenet5,gpt2", "--rounds", "1", "--warmup", "0", "--min-ms", "0", "--batch", "4,2,2"])
    out = capsys.readouterr().out
    assert "LeNet-5" in out and "GPT-2-tiny" in out
    fewer = [float(f) for f in re.findall(r"\(([\d.]+)% fewer\)", out)]
    assert len(fewer) == 2 and min(fewer) >= 35
    assert len(re.findall(r"latency, batch 1 .* dense/compact \d+\.\d\dx", out)) == 2
    assert re.search(r"throughput, batch 4 .*samples/s.* dense/compact \d+\.\d\dx", out)
    assert re.search(r"throughput, batch 2 .*sequences/s.* dense/compact \d+\.\d\dx", out)
    diffs = [float(d) for d in re.findall(r"max\|diff\| masked vs compact outputs: (\S+)", out)]
    assert len(diffs) == 2 and max(diffs) < 1e-5
    assert "heads 4->" in out


@pytest.mark.parametrize("argv", [["--models", "vgg"], ["--batch", "1,2"], ["--sparsity", "1.5"]])
def test_bad_arguments_stop_with_usage(argv):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
