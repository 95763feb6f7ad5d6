"""gpt2.ablation: the registry of steps, cumulative architectures, loud errors, argv replacement; labels in the report."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpt2 import ablation
from lib.results import write_json
from scripts import evidence

from conftest import REPO

ARCH = (ablation.MLP_RATIO, ablation.ATTENTION, ablation.RA_HEADS, ablation.RMLP)


def test_the_registry_is_ordered_and_only_the_last_step_prunes():
    assert ablation.NAMES == ("baseline", "golden", "mla", "ra", "rmlp", "ratio")
    assert all(s.description and "\n" not in s.description for s in ablation.REGISTRY)
    assert [s.name for s in ablation.REGISTRY if s.pruning] == ["ratio"]
    assert ablation.STEPS["ratio"].pruning == ("state", "bitter9")
    # baseline sets every architecture flag, so that every later step is a change of exactly one of them
    assert {flag for flag, _ in ablation.REGISTRY[0].changes} == set(ARCH)


def test_the_pruned_step_names_a_state_variant_that_exists():
    from lib.pruning.state import VARIANTS

    method, variant = ablation.STEPS["ratio"].pruning
    assert method == "state" and variant in VARIANTS and not VARIANTS[variant].layer_adaptive  # RATIO refuses bitter4


def test_importing_it_does_not_import_torch():
    code = "import sys, gpt2.ablation; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


@pytest.mark.parametrize("name, expected", [
    ("baseline", {"--mlp-ratio": "gpt2", "--attention": "standard", "--ra-heads": "0", "--rmlp": False}),
    ("golden", {"--mlp-ratio": "golden", "--attention": "standard", "--ra-heads": "0", "--rmlp": False}),
    ("mla", {"--mlp-ratio": "golden", "--attention": "mla", "--ra-heads": "0", "--rmlp": False}),
    ("ra", {"--mlp-ratio": "golden", "--attention": "mla", "--ra-heads": "all", "--rmlp": False}),
    ("rmlp", {"--mlp-ratio": "golden", "--attention": "mla", "--ra-heads": "all", "--rmlp": True}),
    ("ratio", {"--mlp-ratio": "golden", "--attention": "mla", "--ra-heads": "all", "--rmlp": True}),
])
def test_each_step_includes_every_earlier_step(name, expected):
    assert ablation.architecture(name, {}) == expected


def test_the_ra_step_takes_the_configured_head_count_when_above_zero():
    assert ablation.architecture("ra", {"GPT2_RA_HEADS": 3})["--ra-heads"] == "3"
    assert ablation.architecture("ra", {"GPT2_RA_HEADS": 0})["--ra-heads"] == "all"
    assert ablation.architecture("ra", {"GPT2_RA_HEADS": None})["--ra-heads"] == "all"
    assert ablation.architecture("mla", {"GPT2_RA_HEADS": 3})["--ra-heads"] == "0"  # before the ra step: off


def test_flags_spell_switches_bare_and_the_pruned_step_adds_ratio_budgets():
    assert ablation.flags("baseline", {}) == ["--mlp-ratio", "gpt2", "--attention", "standard", "--ra-heads", "0"]
    assert ablation.flags("rmlp", {})[-1] == "--rmlp" and "--ratio-preserve" not in ablation.flags("rmlp", {})
    assert ablation.flags("ratio", {}) == ablation.flags("rmlp", {}) + ["--ratio-preserve"]


def test_parse_keeps_registry_order_and_accepts_commas():
    assert ablation.parse("ratio baseline") == ["baseline", "ratio"]
    assert ablation.parse(" mla,golden ,\tra ") == ["golden", "mla", "ra"]
    assert ablation.parse("") == [] and ablation.parse(None) == []


@pytest.mark.parametrize("text, message", [
    ("baseline gloden", "unknown ablation step 'gloden'; valid steps: baseline, golden, mla, ra, rmlp, ratio"),
    ("mla ra mla", "ablation step 'mla' is listed twice"),
])
def test_bad_step_lists_are_loud(text, message):
    with pytest.raises(ValueError, match=message):
        ablation.parse(text)


def test_an_unknown_step_name_lists_the_valid_ones():
    for call in (lambda: ablation.architecture("nope", {}), lambda: ablation.argv([], "nope", {})):
        with pytest.raises(ValueError, match="unknown ablation step 'nope'; valid steps: baseline, golden"):
            call()


CONFIGURED = ["--model-size", "tiny", "--mlp-ratio", "3.0", "--attention", "mla", "--mla-latent-dim", "32",
              "--ra-heads", "2", "--rmlp", "--lr", "0.003", "--ratio-preserve", "--ratio", "2.5"]


def test_a_step_replaces_the_configured_architecture():
    out = ablation.argv(CONFIGURED, "baseline", {"GPT2_RA_HEADS": 2})
    assert out == ["--model-size", "tiny", "--lr", "0.003", "--ratio", "2.5",
                   "--mlp-ratio", "gpt2", "--attention", "standard", "--ra-heads", "0"]
    assert "--rmlp" not in out and "--mla-latent-dim" not in out  # no MLA: its latent size goes too


def test_a_step_with_mla_keeps_the_configured_latent_size():
    out = ablation.argv(CONFIGURED, "mla", {"GPT2_RA_HEADS": 2})
    assert out[:8] == ["--model-size", "tiny", "--mla-latent-dim", "32", "--lr", "0.003", "--ratio", "2.5"]
    assert out[8:] == ["--mlp-ratio", "golden", "--attention", "mla", "--ra-heads", "0"]


def test_each_flag_appears_once_whatever_the_configuration_had():
    for name in ablation.NAMES:
        out = ablation.argv(CONFIGURED, name, {"GPT2_RA_HEADS": 2})
        for flag in (*ARCH, "--ratio-preserve", "--mla-latent-dim"):
            assert out.count(flag) <= 1, (name, flag)
        assert ("--ratio-preserve" in out) == (name == "ratio")
        assert ("--rmlp" in out) == (name in ("rmlp", "ratio"))
    assert ablation.argv(CONFIGURED, "ra", {"GPT2_RA_HEADS": 2})[-2:] == ["--ra-heads", "2"]


def _metrics(run_id: str, pruning: str, variant: str | None, target: float) -> dict:
    history = [{"iter": 10, "train_loss": 5.0, "val_loss": 5.0, "val_perplexity": 150.0, "sparsity": target, "lr": 0.003,
                "elapsed_s": 1.0}]
    return {"schema": 1, "run_id": run_id, "model": "gpt2", "dataset": "pydoc", "optimizer": "adamwprune",
            "variant": variant, "pruning": pruning, "target_sparsity": target, "seed": 1, "history": history,
            "final": {"perplexity": 150.0, "best_perplexity": 150.0, "best_at": 10, "sparsity_prunable": target,
                      "train_time_s": 1.0}}


def test_report_labels_name_the_step(tmp_path):
    """metrics.json does not name the step: the evidence takes it from matrix.json's planned spec."""
    runs = [("gpt2_baseline_adamwprune_none", "baseline", "none", None, 0.0),
            ("gpt2_mla_adamwprune_none", "mla", "none", None, 0.0),
            ("gpt2_ratio_adamwprune_bitter9_state_50", "ratio", "state", "bitter9", 0.5)]
    planned = []
    for run_id, step, pruning, variant, target in runs:
        write_json(tmp_path / run_id / "metrics.json", _metrics(run_id, pruning, variant, target))
        write_json(tmp_path / run_id / "run.json", {"run_id": run_id, "status": "completed", "seed": 1})
        planned.append({"run_id": run_id, "spec": {"model": "gpt2", "seed": 1, "step": step}, "argv": []})
    write_json(tmp_path / "matrix.json", {"id": tmp_path.name, "config": {}, "runs": planned})
    m = evidence.load(tmp_path)
    configs = m.configs("gpt2")
    assert [c.step for c in configs] == ["baseline", "mla", "ratio"]
    assert [c.label for c in configs] == ["adamwprune baseline", "adamwprune mla", "adamwprune ratio bitter9 50%"]
    assert len(set(c.series for c in configs)) == 3  # each step its own colour or marker in the figures
    assert m.baseline(configs[2]).key == "gpt2_baseline_adamwprune_none"  # the ratio step against plain GPT-2


def _defconfig_runs(name: str, monkeypatch) -> list[tuple[str, object]]:
    """(run id, gpt2.train's parsed arguments) of every run of a GPT-2 defconfig."""
    from gpt2 import train
    from lib import config, matrix
    from tests.test_gpt2_defconfigs import trainer_args

    monkeypatch.chdir(REPO)
    kconf = config.kconfig()
    config.load_strict(kconf, REPO / "gpt2" / "defconfigs" / name)
    values = config.values(kconf)
    out = []
    for spec in matrix.expand(values):
        procs, args = trainer_args(matrix.argv(spec, values, f"results/x/{matrix.run_id(spec)}"))
        monkeypatch.setenv("WORLD_SIZE", str(procs))
        out.append((matrix.run_id(spec), train.parse_args(args)))
    return out


STEP_IDS = ["gpt2_baseline_adamwprune_none", "gpt2_golden_adamwprune_none", "gpt2_mla_adamwprune_none",
            "gpt2_ra_adamwprune_none", "gpt2_rmlp_adamwprune_none", "gpt2_ratio_adamwprune_bitter9_state_50"]


@pytest.mark.parametrize("name", ["gpt2-tiny-ratio-ablation", "gpt2-ratio-ablation"])
def test_the_ablation_defconfigs_run_every_step_with_its_architecture(name, monkeypatch):
    runs = _defconfig_runs(name, monkeypatch)
    assert [run_id for run_id, _ in runs] == STEP_IDS
    for (run_id, a), step in zip(runs, ablation.NAMES):
        arch = ablation.architecture(step, {})
        heads = {"0": 0, "all": {"tiny": 4, "gpt2": 12}[a.model_size]}[arch["--ra-heads"]]  # the trainer counts "all"
        assert (a.mlp_ratio, a.attention, a.ra_heads, a.rmlp) == \
            (arch["--mlp-ratio"], arch["--attention"], heads, arch["--rmlp"]), run_id
        assert a.optimizer == "adamwprune" and a.adamwprune_base == "adamw"
        assert (a.pruning_method, a.pruning_variant, a.ratio_preserve) == \
            (("state", "bitter9", True) if step == "ratio" else ("none", None, False))
    ratio = runs[-1][1]
    assert ratio.target_sparsity == 0.5 and ratio.ratio == 2.5


def test_the_tiny_ablation_runs_offline_on_the_cpu_and_the_gpu_one_at_gpt2_scale(monkeypatch):
    for _, a in _defconfig_runs("gpt2-tiny-ratio-ablation", monkeypatch):
        assert (a.model_size, a.dataset, a.device, a.max_iters, a.eval_interval) == ("tiny", "pydoc", "cpu", 40, 10)
    for _, a in _defconfig_runs("gpt2-ratio-ablation", monkeypatch):
        assert (a.model_size, a.dataset, a.amp, a.compile, a.max_iters) == ("gpt2", "finewebedu", "bf16", True, 10000)
        assert a.batch_size * a.grad_accum * a.block_size == 524_288  # gpt2-finewebedu-a10gx4's tokens per step
