"""gpt2/defconfigs: savedefconfig-exact, and every run's argv is accepted by gpt2.train (through torchrun too)."""

from pathlib import Path

import kconfiglib
import pytest
from torch.distributed import run as torchrun

from gpt2 import train
from lib import config, matrix

REPO = Path(__file__).resolve().parent.parent
DEFCONFIGS = sorted((REPO / "gpt2" / "defconfigs").iterdir())


def test_the_named_defconfigs_exist():
    assert {p.name for p in DEFCONFIGS} >= {"gpt2-tiny", "gpt2-finewebedu-a10gx4", "gpt2-bitter7"}


@pytest.mark.parametrize("path", DEFCONFIGS, ids=lambda p: p.name)
def test_defconfig_is_what_savedefconfig_writes(path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    kconf = config.kconfig()
    config.load_strict(kconf, path)
    kconf.write_min_config(str(tmp_path / "min"))
    assert (tmp_path / "min").read_text() == path.read_text()


def _runs(path):
    kconf = config.kconfig(REPO / "Kconfig")
    config.load_strict(kconf, path)
    values = config.values(kconf)
    return values, [(s, matrix.argv(s, values, f"results/x/{matrix.run_id(s)}")) for s in matrix.expand(values)]


def trainer_args(argv: list[str]) -> tuple[int, list[str]]:
    """(processes, the trainer's own arguments) of a runner command line."""
    if argv[1:3] == ["-m", "torch.distributed.run"]:
        launched = torchrun.parse_args(argv[3:])  # what torchrun itself hands each process
        assert launched.module and launched.training_script == "gpt2.train"
        return int(launched.nproc_per_node), launched.training_script_args
    assert argv[1:3] == ["-m", "gpt2.train"]
    return 1, argv[3:]


@pytest.mark.parametrize("path", DEFCONFIGS, ids=lambda p: p.name)
def test_every_run_is_accepted_by_the_trainer(path, monkeypatch):
    monkeypatch.chdir(REPO)
    values, runs = _runs(path)
    assert runs
    for spec, argv in runs:
        procs, args = trainer_args(argv)
        assert "--" not in args and args[-2:] == ["--output-dir", f"results/x/{matrix.run_id(spec)}"]
        monkeypatch.setenv("WORLD_SIZE", str(procs))
        parsed = train.parse_args(args)
        assert parsed.optimizer == spec.optimizer and parsed.pruning_method == spec.pruning


def test_what_the_defconfigs_say(monkeypatch):
    monkeypatch.chdir(REPO)
    _, tiny = _runs(REPO / "gpt2/defconfigs/gpt2-tiny")
    assert [matrix.run_id(s) for s, _ in tiny] == ["gpt2_adamw_none"]
    procs, args = trainer_args(tiny[0][1])
    tiny_args = train.parse_args(args)
    assert procs == 1 and tiny_args.dataset == "pydoc" and tiny_args.model_size == "tiny" and tiny_args.device == "cpu"

    _, a10g = _runs(REPO / "gpt2/defconfigs/gpt2-finewebedu-a10gx4")
    for _, argv in a10g:
        procs, args = trainer_args(argv)
        monkeypatch.setenv("WORLD_SIZE", str(procs))
        a = train.parse_args(args)
        assert procs == 4 and a.model_size == "gpt2" and a.dataset == "finewebedu" and a.amp == "bf16" and a.compile
        assert a.batch_size * a.grad_accum * a.block_size == 524_288  # tokens per optimizer step, on any process count

    _, bitter7 = _runs(REPO / "gpt2/defconfigs/gpt2-bitter7")
    assert [matrix.run_id(s) for s, _ in bitter7] == ["gpt2_adamw_magnitude_50", "gpt2_adamwprune_bitter7_state_50"]


def test_zero_processes_means_one_per_visible_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert matrix.processes({"DDP_PROCS": 0}) == 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert matrix.processes({"DDP_PROCS": 0}) == 1
    assert matrix.processes({"DDP_PROCS": 2}) == 2
    assert matrix.processes({}) == 1


def test_kconfig_symbols_of_the_gpt2_menu_reach_the_trainer():
    kconf = kconfiglib.Kconfig(str(REPO / "Kconfig"), warn_to_stderr=False)
    prompted = {s.name for s in kconf.unique_defined_syms if s.name.startswith("GPT2_") and any(n.prompt for n in s.nodes)}
    prompted -= matrix.matrix_symbols()  # GPT2_ABLATION_*: the matrix's steps, never a trainer flag
    gpt2_flags = {s for setting in config.settings(REPO / "Kconfig") if setting.model == "gpt2" for s in setting.symbols}
    assert prompted and prompted == gpt2_flags
