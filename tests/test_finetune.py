"""Prune -> fine-tune: the granularity axis and fine-tuning runs of lib.matrix, the one-shot schedule, --init-from in
lib.run (parent check, weights, shares of length and learning rate, masks before the first step, the evaluation before
fine-tuning), and the runner waiting for parents (scripts/launch.py's Pool, scripts/slurm.py's dependencies)."""

from __future__ import annotations

import signal

import pytest
import torch
from torch import nn

from lenet5 import train as lenet5_train
from lib import classifier, config, matrix
from lib.config import ConfigError
from lib.matrix import RunSpec
from lib.results import read_json, write_json
from lib.run import execute, parent_of, stop_exit_code
from scripts import launch, slurm

from test_launch import Events, stand_in_runs
from test_run import parse, tiny_task
from test_run_stop import final_figures, signal_after_step, without_times

BASE = {"MODEL_LENET5": True, "OPTIMIZER_SGD": True, "PRUNING_NONE": True, "PRUNING_MAGNITUDE": True,
        "SPARSITIES": "0.4 0.7", "SEEDS": "1", "PRUNING_GRANULARITY_ELEMENT": True}
FINETUNE = {**BASE, "PRUNING_GRANULARITY_CHANNEL": True, "FINETUNE": True, "FINETUNE_SCHEDULE_ONESHOT": True}


def ids(cfg: dict) -> list[str]:
    return [matrix.run_id(s) for s in matrix.expand(cfg)]


def loaded(cfg: dict) -> dict:
    """`cfg` as a .config holding it loads: every other symbol at its Kconfig default."""
    kconf = config.kconfig()
    for name, val in cfg.items():
        kconf.syms[name].set_value(("y" if val else "n") if isinstance(val, bool) else str(val))
    return config.values(kconf)


def value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


# -- the granularity axis -------------------------------------------------------------------
def test_each_checked_granularity_is_a_run_named_after_the_method_and_element_keeps_its_old_id_and_argv():
    cfg = {**BASE, "SPARSITIES": "0.4", "PRUNING_GRANULARITY_CHANNEL": True, "PRUNING_GRANULARITY_NM": True,
           "PRUNING_NM_PATTERN": "2:4"}
    assert ids(cfg) == ["lenet5_sgd_none", "lenet5_sgd_magnitude_40", "lenet5_sgd_magnitude_2of4_50",
                        "lenet5_sgd_magnitude_channel_40"]
    specs = {matrix.run_id(s): s for s in matrix.expand(cfg)}
    assert "--pruning-granularity" not in matrix.argv(specs["lenet5_sgd_magnitude_40"], cfg, "out")
    assert value(matrix.argv(specs["lenet5_sgd_magnitude_channel_40"], cfg, "out"), "--pruning-granularity") == "channel"
    nm = matrix.argv(specs["lenet5_sgd_magnitude_2of4_50"], cfg, "out")
    assert value(nm, "--pruning-granularity") == "2:4" and value(nm, "--target-sparsity") == "0.5"


def test_an_nm_run_runs_once_at_its_own_sparsity_whatever_the_levels_say():
    cfg = {**BASE, "SPARSITIES": "0.3 0.5 0.9", "PRUNING_GRANULARITY_ELEMENT": False, "PRUNING_GRANULARITY_NM": True,
           "PRUNING_NM_PATTERN": "1:4", "SEEDS": "1 2"}
    assert ids(cfg) == ["lenet5_sgd_none_s1", "lenet5_sgd_none_s2", "lenet5_sgd_magnitude_1of4_75_s1",
                        "lenet5_sgd_magnitude_1of4_75_s2"]


@pytest.mark.parametrize("pattern", ["3:2", "2:2", "0:4", "2-4", "", "two:four"])
def test_a_bad_nm_pattern_is_one_line(pattern):
    cfg = {**BASE, "PRUNING_GRANULARITY_NM": True, "PRUNING_NM_PATTERN": pattern}
    with pytest.raises(ConfigError) as e:
        matrix.expand(cfg)
    assert str(e.value) == f"CONFIG_PRUNING_NM_PATTERN={pattern!r}: write N:M with 0 < N < M, e.g. 2:4"


def test_pruning_without_a_granularity_is_refused_naming_the_boxes():
    with pytest.raises(ConfigError, match="no granularity: check at least one of CONFIG_PRUNING_GRANULARITY_ELEMENT"):
        matrix.expand({**BASE, "PRUNING_GRANULARITY_ELEMENT": False})
    assert ids({**BASE, "PRUNING_MAGNITUDE": False, "PRUNING_GRANULARITY_ELEMENT": False}) == ["lenet5_sgd_none"]


def test_a_layer_adaptive_variant_runs_at_element_granularity_only():
    cfg = {"MODEL_LENET5": True, "OPTIMIZER_ADAMWPRUNE": True, "ADAMWPRUNE_BASE_ADAMW": True, "PRUNING_STATE": True,
           "PRUNING_STATE_BITTER1": True, "PRUNING_STATE_BITTER4": True, "SPARSITIES": "0.5",
           "PRUNING_GRANULARITY_ELEMENT": True, "PRUNING_GRANULARITY_CHANNEL": True}
    assert ids(cfg) == ["lenet5_adamwprune_bitter1_state_50", "lenet5_adamwprune_bitter1_state_channel_50",
                        "lenet5_adamwprune_bitter4_state_50"]


def test_granularity_symbols_are_the_matrix_s_not_trainer_flags():
    flags = config.flag_symbols()
    for symbol in [*matrix.GRANULARITIES, "PRUNING_NM_PATTERN", "FINETUNE", *matrix.FINETUNE_SCHEDULES]:
        assert symbol in matrix.matrix_symbols() and symbol not in flags
    assert {"FINETUNE_LENGTH_PERCENT", "FINETUNE_LR_PERCENT"} <= flags  # settings: they reach the trainers
    assert not [s for s in config.settings() if s.flag == "--finetune-schedule"]


# -- fine-tuning runs ---------------------------------------------------------------------------
def test_every_dense_run_gets_a_child_per_method_granularity_and_level_after_every_other_run():
    cfg = {**FINETUNE, "PRUNING_GRANULARITY_NM": True, "PRUNING_NM_PATTERN": "2:4"}
    assert ids(cfg) == ["lenet5_sgd_none", "lenet5_sgd_magnitude_40", "lenet5_sgd_magnitude_70", "lenet5_sgd_magnitude_2of4_50",
                        "lenet5_sgd_magnitude_channel_40", "lenet5_sgd_magnitude_channel_70","lenet5_sgd_none_ft_magnitude_40", "lenet5_sgd_none_ft_magnitude_70",
                       "lenet5_sgd_none_ft_magnitude_2of4_50", "lenet5_sgd_none_ft_magnitude_channel_40",
                       "lenet5_sgd_none_ft_magnitude_channel_70"]
    children = [s for s in matrix.expand(cfg) if s.parent]
    assert {s.parent for s in children} == {"lenet5_sgd_none"} and [s.granularity for s in children] == \
        ["element", "element", "2:4", "channel", "channel"]


def test_a_child_is_its_parent_s_command_with_its_pruning_the_parent_s_best_pt_and_the_one_shot_schedule():
    cfg = loaded(FINETUNE)
    specs = {matrix.run_id(s): s for s in matrix.expand(cfg)}
    parent = matrix.argv(specs["lenet5_sgd_none"], cfg, "res/m/lenet5_sgd_none")
    child = matrix.argv(specs["lenet5_sgd_none_ft_magnitude_channel_40"], cfg, "res/m/lenet5_sgd_none_ft_magnitude_channel_40")
    assert value(child, "--init-from") == "res/m/lenet5_sgd_none/best.pt"
    assert value(child, "--pruning-schedule") == "oneshot" and value(parent, "--pruning-schedule") == "cubic"
    assert value(child, "--pruning-granularity") == "channel" and value(child, "--target-sparsity") == "0.4"
    assert value(child, "--finetune-length-percent") == "25" and value(child, "--finetune-lr-percent") == "10"
    for flag in (f for f in parent if f.startswith("--") and f not in ("--pruning-method", "--pruning-schedule", "--output-dir")):
        assert value(child, flag) == value(parent, flag), flag  # the parent's model, data and training settings
    gradual = loaded({**FINETUNE, "FINETUNE_SCHEDULE_GRADUAL": True})
    assert value(matrix.argv(specs["lenet5_sgd_none_ft_magnitude_40"], gradual, "o/x"), "--pruning-schedule") == "cubic"


def test_without_finetune_the_lengths_and_shares_are_not_passed():
    values = loaded({"MODEL_LENET5": True, "OPTIMIZER_SGD": True, "PRUNING_NONE": True, "PRUNING_MAGNITUDE": True,
                     "SPARSITIES": "0.5"})
    assert values["FINETUNE_LENGTH_PERCENT"] is None
    argv = matrix.argv(matrix.expand(values)[0], values, "o/x")
    assert "--finetune-length-percent" not in argv and "--init-from" not in argv


def test_children_seeds_group_like_every_run_and_budget_extensions_do_not_reach_them():
    cfg = {"MODEL_LENET5": True, "OPTIMIZER_ADAMWPRUNE": True, "ADAMWPRUNE_BASE_ADAMW": True, "PRUNING_NONE": True,
           "PRUNING_STATE": True, "PRUNING_STATE_BITTER2": True, "PRUNING_BITTER2_BUDGET_PERCENT": 21, "SPARSITIES": "0.5",
           "SEEDS": "1 2", "PRUNING_GRANULARITY_ELEMENT": True, "FINETUNE": True, "FINETUNE_SCHEDULE_GRADUAL": True}
    specs = matrix.expand(cfg)
    children = [s for s in specs if s.parent]
    assert [matrix.run_id(s) for s in children] == ["lenet5_adamwprune_none_ft_state_bitter2_50_s1",
                                                    "lenet5_adamwprune_none_ft_state_bitter2_50_s2"]
    assert [s.parent for s in children] == ["lenet5_adamwprune_none_s1", "lenet5_adamwprune_none_s2"]
    pruned = next(s for s in specs if s.pruning == "state" and not s.parent)
    assert value(matrix.argv(pruned, cfg, "o/x"), "--budget-extension") == "21"
    assert "--budget-extension" not in matrix.argv(children[0], cfg, "o/x")


def test_an_adamwprune_parent_gets_state_children_only_and_other_optimizers_never_state():
    cfg = {**FINETUNE, "OPTIMIZER_ADAMWPRUNE": True, "ADAMWPRUNE_BASE_ADAMW": True, "PRUNING_STATE": True,
           "PRUNING_STATE_BITTER1": True, "PRUNING_MAGNITUDE": False, "SPARSITIES": "0.5",
           "FINETUNE_SCHEDULE_ONESHOT": False, "FINETUNE_SCHEDULE_GRADUAL": True}
    children = [matrix.run_id(s) for s in matrix.expand(cfg) if s.parent]
    assert children == ["lenet5_adamwprune_none_ft_state_bitter1_50", "lenet5_adamwprune_none_ft_state_bitter1_channel_50"]


def test_one_shot_with_a_method_that_learns_its_scores_is_refused():
    with pytest.raises(ConfigError) as e:
        matrix.expand({**FINETUNE, "PRUNING_MOVEMENT": True})
    assert "CONFIG_FINETUNE_SCHEDULE_ONESHOT" in str(e.value) and "uncheck CONFIG_PRUNING_MOVEMENT" in str(e.value)
    assert "\n" not in str(e.value)
    assert ids({**FINETUNE, "PRUNING_MOVEMENT": True, "FINETUNE_SCHEDULE_ONESHOT": False, "FINETUNE_SCHEDULE_GRADUAL": True})


def test_finetune_with_no_child_possible_is_refused():
    cfg = {"MODEL_LENET5": True, "OPTIMIZER_ADAMWPRUNE": True, "ADAMWPRUNE_BASE_ADAMW": True, "OPTIMIZER_SGD": False,
           "PRUNING_NONE": True, "PRUNING_MAGNITUDE": True, "SPARSITIES": "0.5", "PRUNING_GRANULARITY_ELEMENT": True,
           "FINETUNE": True}
    with pytest.raises(ConfigError, match="CONFIG_FINETUNE is set but no dense run can be pruned"):
        matrix.expand(cfg)


def test_every_child_argv_parses():
    values = loaded({**FINETUNE, "PRUNING_GRANULARITY_NM": True, "PRUNING_NM_PATTERN": "2:4"})
    for spec in (s for s in matrix.expand(values) if s.parent):
        argv = matrix.argv(spec, values, f"res/m/{matrix.run_id(spec)}")
        args = lenet5_train.parse_args(argv[3:])
        assert args.init_from == "res/m/lenet5_sgd_none/best.pt" and args.pruning_schedule == "oneshot"


def test_run_specs_keep_their_defaults_for_old_records():
    old = RunSpec("lenet5", "sgd", "magnitude", 0.5, 1)
    assert (old.granularity, old.parent) == ("element", None) and matrix.run_id(old) == "lenet5_sgd_magnitude_50"


# -- the trainer flags -------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--pruning-method", "movement", "--target-sparsity", "0.5", "--pruning-schedule", "oneshot"],
     "--pruning-schedule oneshot sets the masks before the first step"),
    (["--finetune-length-percent", "0"], "--finetune-length-percent must be positive, got 0.0"),
    (["--finetune-lr-percent", "-5"], "--finetune-lr-percent must be positive, got -5.0"),
])
def test_bad_fine_tuning_flags_are_one_line(flags, message, capsys):
    with pytest.raises(SystemExit):
        lenet5_train.parse_args(flags)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err


# -- lib.run: --init-from ------------------------------------------------------------------------
def tiny_model():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def fit_tiny(args) -> int:
    train_set, val_set = tiny_task(96)
    return execute(lambda a: classifier.fit(a, tiny_model, train_set, val_set, model_name="tiny", dataset="synthetic"), args)


@pytest.fixture
def parent(tmp_path):
    """A completed dense run of the tiny model (8 epochs)."""
    out = tmp_path / "parent"
    assert fit_tiny(parse(out, "--epochs", "8", "--batch-size", "8", "--lr", "0.05")) == 0
    return out


@pytest.mark.usefixtures("one_thread")
def test_a_child_starts_from_its_parent_pruned_before_its_first_step_at_a_share_of_length_and_rate(parent, tmp_path):
    out = tmp_path / "child"
    args = parse(out, "--epochs", "8", "--batch-size", "8", "--lr", "0.05", "--pruning-method", "magnitude",
                 "--target-sparsity", "0.5", "--pruning-schedule", "oneshot", "--init-from", str(parent / "best.pt"),
                 "--finetune-length-percent", "50", "--finetune-lr-percent", "20")
    assert fit_tiny(args) == 0
    record, metrics = read_json(out / "run.json"), read_json(out / "metrics.json")
    assert record["parent"] == {"run_id": "parent", "path": str(parent), "checkpoint": "best.pt"}
    assert record["finetune"] == {"lr_percent": 20.0, "base_lr": 0.05, "lr": pytest.approx(0.01), "length_percent": 50.0,
                                  "unit": "epochs", "base": 8, "trained": 4}
    assert metrics["parent"] == "parent" and metrics["granularity"] == "element"
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert all(h["sparsity"] == pytest.approx(0.5, abs=0.02) for h in metrics["history"])  # at the target from epoch 1
    assert [h["lr"] for h in metrics["history"]] == pytest.approx([0.01] * 4)  # the default constant rate, 20 % of 0.05
    before = metrics["final"]["pruned_before_finetune"]
    assert before["sparsity"] == pytest.approx(0.5, abs=0.02) and 0 <= before["val_accuracy"] <= 100

    # The evaluation before fine-tuning is the parent's weights with the magnitude masks, nothing trained yet.
    model = tiny_model()
    model.load_state_dict(torch.load(parent / "best.pt", weights_only=False)["model"])
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    cut = flat.kthvalue(int(round(0.5 * flat.numel()))).values
    with torch.no_grad():
        for w in weights:
            w[w.abs() <= cut] = 0
    _, val_set = tiny_task(96)
    loss, accuracy = classifier.evaluate(model, torch.utils.data.DataLoader(val_set, batch_size=256), torch.device("cpu"))
    assert before["val_accuracy"] == pytest.approx(accuracy) and before["val_loss"] == pytest.approx(loss)


@pytest.mark.usefixtures("one_thread")
def test_a_resumed_child_does_not_read_its_parent_again_and_ends_as_the_uninterrupted_one(parent, tmp_path, monkeypatch):
    flags = ["--epochs", "8", "--batch-size", "8", "--pruning-method", "magnitude", "--target-sparsity", "0.5",
             "--pruning-schedule", "oneshot", "--init-from", str(parent / "best.pt")]  # 2 epochs of 8 steps
    straight, out = tmp_path / "straight", tmp_path / "child"
    assert fit_tiny(parse(straight, *flags)) == 0
    with monkeypatch.context() as m:
        signal_after_step(m, classifier, 11, signal.SIGUSR1)  # in its second epoch
        assert fit_tiny(parse(out, *flags)) == stop_exit_code(signal.SIGUSR1)
    assert read_json(out / "run.json")["status"] == "interrupted"
    # The parent is gone and no longer completed: a resumed child reads neither.
    (parent / "best.pt").rename(parent / "moved.pt")
    write_json(parent / "run.json", {**read_json(parent / "run.json"), "status": "failed"})
    assert fit_tiny(parse(out, *flags, "--resume")) == 0
    record = read_json(out / "run.json")
    assert record["status"] == "completed" and record["attempt"] == 2 and record["parent"]["run_id"] == "parent"
    got, want = read_json(out / "metrics.json"), read_json(straight / "metrics.json")
    assert without_times(got["history"]) == without_times(want["history"])
    assert final_figures(got["final"]) == final_figures(want["final"])  # pruned_before_finetune kept across the stop


@pytest.mark.parametrize("status", ["failed", "running", None])
def test_a_parent_that_is_not_completed_is_one_line_and_nothing_of_it_changes(tmp_path, status, capsys):
    parent = tmp_path / "lenet5_sgd_none"
    parent.mkdir()
    if status:
        write_json(parent / "run.json", {"run_id": parent.name, "status": status})
    (parent / "best.pt").write_bytes(b"weights")
    before = {p.name: p.read_bytes() for p in parent.iterdir()}
    out = tmp_path / "child"
    args = parse(out, "--pruning-method", "magnitude", "--target-sparsity", "0.5", "--pruning-schedule", "oneshot",
                 "--init-from", str(parent / "best.pt"))
    assert fit_tiny(args) == 1
    shown = status or "no run.json"
    assert capsys.readouterr().err.splitlines() == [
        f"error: parent run lenet5_sgd_none is not completed (status: {shown}); finish it first"]
    assert {p.name: p.read_bytes() for p in parent.iterdir()} == before
    assert read_json(out / "run.json")["status"] == "failed" and not (out / "checkpoint.pt").exists()


def test_a_completed_parent_without_its_checkpoint_is_one_line(tmp_path):
    write_json(tmp_path / "p" / "run.json", {"run_id": "p", "status": "completed"})
    with pytest.raises(ValueError, match=r"parent run p has no best.pt"):
        parent_of(str(tmp_path / "p" / "best.pt"))


@pytest.mark.usefixtures("one_thread")
def test_weights_that_do_not_fit_are_one_line(parent, tmp_path, capsys):
    train_set, val_set = tiny_task(96)
    args = parse(tmp_path / "c", "--init-from", str(parent / "best.pt"), "--epochs", "1")
    wide = lambda: nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))  # noqa: E731
    code = execute(lambda a: classifier.fit(a, wide, train_set, val_set, model_name="tiny", dataset="synthetic"), args)
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --init-from {parent / 'best.pt'}: its weights do not fit this run's model")


# -- the runner waits for parents -------------------------------------------------------------------
def family(tmp_path, parent_fails: bool = False) -> list[dict]:
    runs = stand_in_runs(tmp_path, {"p": ["--fail"] if parent_fails else [], "other": [], "p_ft_magnitude_50": []})
    runs[2]["spec"]["parent"] = "p"
    return [runs[2], runs[0], runs[1]]  # the child first: the pool must still wait for its parent


def test_the_pool_starts_a_child_only_once_its_parent_completed(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(launch.REPO))
    display = Events()
    launch.Pool(launch.slots(2, 1, None, cpus=2), display, fork=False).run(family(tmp_path))
    records = {r: read_json(tmp_path / r / "run.json") for r in ("p", "other", "p_ft_magnitude_50")}
    assert all(r["status"] == "completed" for r in records.values())
    assert records["p_ft_magnitude_50"]["began"] >= records["p"]["ended"]
    started = [e[1] for e in display.events if e[0] == "started"]
    assert started[:2] == ["p", "other"] and started[2] == "p_ft_magnitude_50"


def test_the_child_of_a_failed_parent_is_skipped_and_the_others_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(launch.REPO))
    display = Events()
    launch.Pool(launch.slots(1, 1, None, cpus=2), display, fork=False).run(family(tmp_path, parent_fails=True))
    assert ("skipped", "p_ft_magnitude_50", "skipped: parent p failed") in display.events
    assert not (tmp_path / "p_ft_magnitude_50" / "run.json").exists()
    assert read_json(tmp_path / "other" / "run.json")["status"] == "completed"


def test_slurm_holds_a_child_on_its_parent_s_task_and_leaves_out_one_whose_parent_will_not_run(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_sbatch(argv, **kw):
        calls.append(argv)
        return type("R", (), {"returncode": 0, "stdout": f"{100 + len(calls)}\n", "stderr": ""})()

    monkeypatch.setattr(slurm.subprocess, "run", fake_sbatch)
    monkeypatch.setattr(slurm, "active_tasks", lambda d: {"q": "77_3"})
    meta = {"id": "m", "config": {}, "runs": [
        {"run_id": "p", "spec": {}}, {"run_id": "x", "spec": {}}, {"run_id": "p_ft_a", "spec": {"parent": "p"}},
        {"run_id": "p_ft_b", "spec": {"parent": "p"}}, {"run_id": "q_ft_a", "spec": {"parent": "q"}},
        {"run_id": "f_ft_a", "spec": {"parent": "f"}}, {"run_id": "d_ft_a", "spec": {"parent": "d"}}]}
    write_json(tmp_path / "f" / "run.json", {"status": "failed"})
    write_json(tmp_path / "d" / "run.json", {"status": "completed"})
    write_json(tmp_path / "d" / "metrics.json", {"history": [], "final": {"accuracy": 1.0, "sparsity_prunable": 0.0, "train_time_s": 1.0}})
    assert slurm.submit(tmp_path, meta, ["p", "x", "p_ft_a", "p_ft_b", "q_ft_a", "f_ft_a", "d_ft_a"], 0) == 0
    records = slurm.submissions(tmp_path)
    assert [(r["run_ids"], r["after"]) for r in records] == [
        (["p", "x", "d_ft_a"], None), (["p_ft_a", "p_ft_b"], "101_0"), (["q_ft_a"], "77_3")]
    assert "--dependency=afterok:101_0" in calls[1] and "--kill-on-invalid-dep=yes" in calls[1]
    assert not any(a.startswith("--dependency") for a in calls[0])
    assert "not submitted: f_ft_a (skipped: parent f failed" in capsys.readouterr().out
