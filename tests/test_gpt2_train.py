"""gpt2.train: flags, the shared lr schedule, the run directory, pruning of the tied head, resume, limits (tiny runs in-process)."""

import json
import math
import shutil

import pytest
import torch

from gpt2 import train
from gpt2.data import CorpusTooSmall
from gpt2.model import GPT, config_for
from lib import checkpoint, config, optim, run as lifecycle
from lib.results import is_done, read_json

GPT2_KEYS = ("model_size", "dataset", "block_size", "batch_size", "grad_accum", "max_iters", "eval_interval",
             "eval_iters", "lr", "lr_schedule", "lr_min", "lr_warmup_percent", "lr_step_percent", "lr_step_gamma", "grad_clip",
             "dropout", "max_minutes", "amp", "compile", "prune_tied_head", "mlp_ratio", "attention", "mla_latent_dim",
             "ra_heads", "rmlp")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small text file (CPython's own docs), prepared once for the module."""
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("corpus")
    path = root / "docs.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics))[:60_000], encoding="utf-8")
    return path


def tiny_args(corpus, out, *extra):
    return train.parse_args([
        "--dataset", "file", "--text-file", str(corpus), "--data-dir", str(out.parent / "data"),
        "--output-dir", str(out), "--device", "cpu", "--monitor", "off", "--optimizer", "adamw",
        "--block-size", "8", "--batch-size", "2", "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1",
        "--lr-schedule", "warmup_cosine", "--lr-warmup-percent", "25", "--lr-min", "1e-4", "--log-interval", "2", *extra,
    ])


@pytest.fixture(scope="module")
def whole(corpus, tmp_path_factory):
    """One uninterrupted 4-iteration run: (its directory, its metrics)."""
    out = tmp_path_factory.mktemp("runs") / "gpt2_adamw_none"
    return out, train.main(tiny_args(corpus, out))


def shared_schedule_lrs(args, steps: int) -> list[float]:
    """The lr of each of `steps` optimizer steps and after the last one, from lib.optim alone, for the same flags."""
    opt = optim.from_args(args, GPT(config_for("tiny", block_size=args.block_size)))
    scheduler = optim.scheduler_from_args(args, opt, steps)
    out = []
    for _ in range(steps):
        out.append(optim.current_lr(opt))
        opt.step()  # no gradients: a no-op that keeps torch's call-order check quiet
        scheduler.step()
    return out + [optim.current_lr(opt)]


@pytest.mark.parametrize("schedule", ["warmup_cosine", "step"])
def test_gpt2_follows_the_shared_schedule_once_per_iteration(schedule, corpus, tmp_path, monkeypatch):
    used = []
    real_step = train.optimizer_step

    def records_lr(optimizer, *a, **kw):
        used.append(optim.current_lr(optimizer))  # the lr this iteration's optimizer step runs with
        return real_step(optimizer, *a, **kw)

    monkeypatch.setattr(train, "optimizer_step", records_lr)
    args = tiny_args(corpus, tmp_path / schedule, "--max-iters", "8", "--lr", "3e-3", "--lr-schedule", schedule,
                     "--lr-step-percent", "25", "--lr-step-gamma", "0.5")
    metrics = train.main(args)
    expected = shared_schedule_lrs(args, 8)
    assert used == expected[:8]
    assert [(h["iter"], h["lr"]) for h in metrics["history"]] == [(t, expected[t]) for t in (2, 4, 6, 8)]
    if schedule == "warmup_cosine":  # 25 % of 8 steps of linear warmup, then the cosine down to --lr-min
        assert used[:4] == pytest.approx([1.5e-3, 3e-3, 3e-3, 3e-3 - (3e-3 - 1e-4) * 0.5 * (1 - math.cos(math.pi / 6))])
        assert metrics["history"][-1]["lr"] == pytest.approx(1e-4)
    else:
        assert used == pytest.approx([3e-3] * 2 + [1.5e-3] * 2 + [7.5e-4] * 2 + [3.75e-4] * 2)


def test_a_budget_extension_lengthens_the_schedule(corpus, tmp_path):
    args = tiny_args(corpus, tmp_path / "ext", "--budget-extension", "50")
    metrics = train.main(args)
    assert args.max_iters == 6 and [h["iter"] for h in metrics["history"]] == [2, 4, 6]
    expected = shared_schedule_lrs(args, 6)
    assert [h["lr"] for h in metrics["history"]] == [expected[t] for t in (2, 4, 6)]
    assert expected[6] == pytest.approx(1e-4)  # the cosine ends at the extended run's last iteration


def test_trainer_defaults_are_the_kconfig_defaults(tmp_path):
    dot_config = tmp_path / ".config"
    dot_config.write_text("CONFIG_MODEL_GPT2=y\n")
    values = config.load(dot_config)
    from_kconfig = vars(train.parse_args(config.trainer_argv(values, "gpt2")))
    defaults = vars(train.parse_args([]))
    assert {k: from_kconfig[k] for k in GPT2_KEYS} == {k: defaults[k] for k in GPT2_KEYS}


def test_architecture_settings_reach_the_trainer_by_the_naming_rule(tmp_path):
    dot_config = tmp_path / ".config"
    dot_config.write_text('CONFIG_MODEL_GPT2=y\nCONFIG_GPT2_MLP_RATIO="golden"\nCONFIG_GPT2_ATTENTION_MLA=y\n'
                          "CONFIG_GPT2_MLA_LATENT_DIM=16\nCONFIG_GPT2_RA_HEADS=2\nCONFIG_GPT2_RMLP=y\n")
    argv = config.trainer_argv(config.load(dot_config), "gpt2")
    for flag in (["--mlp-ratio", "golden"], ["--attention", "mla"], ["--mla-latent-dim", "16"], ["--ra-heads", "2"]):
        assert flag[0] in argv and argv[argv.index(flag[0]) + 1] == flag[1]
    args = train.parse_args(argv)
    assert (args.mlp_ratio, args.attention, args.mla_latent_dim, args.ra_heads, args.rmlp) == ("golden", "mla", 16, 2, True)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "3"], "--epochs does not apply to gpt2"),
        (["--model-size", "gpt5"], "invalid choice: 'gpt5'"),
        (["--dataset", "file"], "--dataset file needs --text-file"),
        (["--block-size", "2048"], "--block-size must be in 1..1024"),
        (["--lr-schedule", "warmup_cosine", "--lr-min", "1", "--lr", "0.1"], "--lr-min must be within"),
        (["--warmup-iters", "10"], "unrecognized arguments: --warmup-iters"),
        (["--grad-accum", "0"], "--grad-accum must be at least 1"),
        (["--mlp-ratio", "silver"], "--mlp-ratio: MLP ratio 'silver': write gpt2, golden or a positive number"),
        (["--attention", "linear"], "argument --attention: invalid choice: 'linear'"),
        (["--mla-latent-dim", "0"], "--mla-latent-dim must be at least 1, got 0"),
        (["--ra-heads", "some"], "--ra-heads: 'some' is not a number of heads (0, 1, 2, ...) or 'all'"),
        (["--ra-heads", "-1"], "--ra-heads: '-1' is not a number of heads"),
        (["--ra-heads", "5"], "--ra-heads 5 is more than the 4 heads of --model-size tiny; valid: 0..4 or all"),
        (["--pruning-method", "magnitude", "--target-sparsity", "0.5", "--pruning-granularity", "channel",
          "--attention", "mla", "--ra-heads", "1", "--rmlp"],
         "--pruning-granularity channel cannot take --attention mla, --ra-heads, --rmlp: channel units know GPT-2's own "
         "attention heads only (c_attn, c_proj); use element or N:M granularity"),
        (["--pruning-method", "magnitude", "--target-sparsity", "0.5", "--pruning-granularity", "channel", "--rmlp"],
         "--pruning-granularity channel cannot take --rmlp: "),
    ],
)
def test_bad_flags_are_refused_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(argv)
    assert message in capsys.readouterr().err


def test_architecture_flags_reach_the_model():
    args = train.parse_args(["--mlp-ratio", "golden", "--attention", "mla", "--ra-heads", "all", "--rmlp"])
    assert (args.mla_latent_dim, args.ra_heads) == (32, 4)  # the tiny size's latent default, all 4 heads
    cfg = train.build_model(args).config
    assert (cfg.mlp_ratio, cfg.attention, cfg.latent_dim, cfg.ra_heads, cfg.rmlp) == ("golden", "mla", 32, 4, True)
    args = train.parse_args(["--model-size", "gpt2", "--mla-latent-dim", "64", "--ra-heads", "12"])
    assert (args.mla_latent_dim, args.ra_heads) == (64, 12)
    assert train.parse_args(["--model-size", "gpt2"]).mla_latent_dim == 128
    # channel granularity with GPT-2's own attention, golden MLP included, is fine
    args = train.parse_args(["--pruning-method", "magnitude", "--target-sparsity", "0.5", "--pruning-granularity", "channel",
                             "--mlp-ratio", "golden"])
    assert train.architecture_key(args) == {"mlp_ratio": "golden", "attention": "standard", "ra_heads": 0, "rmlp": False}
    assert train.architecture_key(train.parse_args(["--mla-latent-dim", "8"])) is None  # GPT-2's own: the latent is unused


def test_accumulation_must_split_over_the_processes(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        train.parse_args(["--grad-accum", "3"])
    assert "not divisible by the 2 processes" in capsys.readouterr().err
    assert train.parse_args(["--grad-accum", "4"]).grad_accum == 4


def test_a_run_writes_the_run_directory_contract(whole):
    out, metrics = whole
    assert is_done(out) and read_json(out / "metrics.json") == json.loads(json.dumps(metrics))
    hist = metrics["history"]
    assert [h["iter"] for h in hist] == [2, 4]
    for h in hist:
        assert set(h) >= {"iter", "train_loss", "val_loss", "val_perplexity", "sparsity", "lr", "elapsed_s"}
        assert h["val_perplexity"] == pytest.approx(math.exp(h["val_loss"]))
    final = metrics["final"]
    assert final["perplexity"] == hist[-1]["val_perplexity"] and final["best_perplexity"] <= hist[0]["val_perplexity"]
    assert final["iters"] == 4 and final["tokens"] == 4 * 2 * 8 and final["stopped_by"] == "max_iters"
    assert final["params"] == sum(p.numel() for p in GPT(config_for("tiny", block_size=8)).parameters())
    assert metrics["model"] == "gpt2" and metrics["variant"] is None and metrics["target_sparsity"] == 0.0
    state = checkpoint.load(out / "checkpoint.pt")
    assert state["iter"] == 4 and state["data"]["sequences"] == 4 * 2 and len(state["rng"]) == 1
    assert state["scheduler"]["last_epoch"] == 4  # one scheduler step per iteration
    assert torch.load(out / "best.pt", weights_only=False)["iter"] in (2, 4)
    assert read_json(out / "run.json")["status"] == "completed"


def _wte_zeros(out) -> int:
    model = checkpoint.load(out / "checkpoint.pt")["model"]
    return int((model["transformer.wte.weight"] == 0).sum())


def test_pruning_leaves_the_tied_head_dense_unless_asked(corpus, tmp_path):
    prune = ["--pruning-method", "magnitude", "--target-sparsity", "0.5", "--pruning-frequency", "1", "--max-iters", "2"]
    dense_head = train.main(tiny_args(corpus, tmp_path / "a", *prune))
    assert dense_head["final"]["sparsity_prunable"] == pytest.approx(0.5, abs=1e-4)
    assert "lm_head.weight" not in dense_head["final"]["layers"] and _wte_zeros(tmp_path / "a") == 0
    pruned_head = train.main(tiny_args(corpus, tmp_path / "b", *prune, "--prune-tied-head"))
    assert pruned_head["final"]["sparsity_prunable"] == pytest.approx(0.5, abs=1e-4)
    assert _wte_zeros(tmp_path / "b") > 0


def test_state_pruning_runs_on_gpt2(corpus, tmp_path):
    metrics = train.main(tiny_args(
        corpus, tmp_path / "s", "--optimizer", "adamwprune", "--pruning-method", "state",
        "--pruning-variant", "bitter7", "--target-sparsity", "0.5", "--pruning-frequency", "1", "--max-iters", "2",
    ))
    assert metrics["variant"] == "bitter7" and metrics["final"]["sparsity_prunable"] == pytest.approx(0.5, abs=1e-4)


def test_a_ratio_preserving_run_reports_its_budgets_in_the_final_block(corpus, tmp_path):
    out = tmp_path / "ratio"
    train.main(tiny_args(
        corpus, out, "--optimizer", "adamwprune", "--pruning-method", "state", "--pruning-variant", "bitter8",
        "--ratio-preserve", "--target-sparsity", "0.5", "--pruning-frequency", "1", "--max-iters", "2",
    ))
    final = read_json(out / "metrics.json")["final"]
    pruning = final["pruning"]
    assert pruning["method"] == "state" and pruning["variant"] == "bitter8"
    assert pruning["achieved_sparsity"] == pytest.approx(final["sparsity_prunable"])
    ratio = pruning["ratio"]
    assert ratio["target_ratio"] == 2.5 and ratio["tolerance"] == 0.2
    assert 0 < ratio["attention_prune_fraction"] < 1 and 0 < ratio["mlp_prune_fraction"] < 1
    assert ratio["achieved_ratio"] == pytest.approx(2.5, abs=0.2)


def test_resume_continues_exactly(corpus, whole, tmp_path, monkeypatch):
    real_step, steps = train.optimizer_step, []

    def dies_in_iteration_3(*a, **kw):
        steps.append(1)
        if len(steps) == 3:  # after the checkpoint of iteration 2
            raise KeyboardInterrupt
        return real_step(*a, **kw)

    monkeypatch.setattr(train, "optimizer_step", dies_in_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        train.main(tiny_args(corpus, tmp_path / "cut"))
    monkeypatch.setattr(train, "optimizer_step", real_step)
    resumed = train.main(tiny_args(corpus, tmp_path / "cut", "--resume"))
    strip = lambda h: [{k: v for k, v in e.items() if k != "elapsed_s"} for e in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(whole[1]["history"])
    assert resumed["final"]["perplexity"] == whole[1]["final"]["perplexity"]


def test_resume_with_other_settings_is_refused_and_keeps_the_checkpoint(corpus, whole, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(whole[0], out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    with pytest.raises(ValueError, match=r"block_size: 8 -> 16"):
        train.main(tiny_args(corpus, out, "--block-size", "16", "--resume"))
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before


def test_wall_clock_limit_stops_early_and_completes(corpus, tmp_path):
    metrics = train.main(tiny_args(corpus, tmp_path / "t", "--max-minutes", "1e-9"))
    assert metrics["final"]["stopped_by"] == "max_minutes" and metrics["final"]["iters"] == 1
    assert is_done(tmp_path / "t")


def test_a_corpus_too_small_for_the_block_fails_the_run_clearly(tmp_path, capsys):
    small = tmp_path / "small.txt"
    small.write_text("Just a few words here.\n" * 3)
    args = tiny_args(small, tmp_path / "x", "--block-size", "64")
    assert lifecycle.execute(train.main, args) == 1
    err = capsys.readouterr().err
    assert "too few for the block size 64" in err and err.count("\n") == 1
    run = read_json(tmp_path / "x" / "run.json")
    assert run["status"] == "failed" and "block size 64" in run["error"]
    with pytest.raises(CorpusTooSmall):
        train.main(args)


def test_a_run_of_every_variant_records_its_architecture_and_resumes_only_with_it(corpus, tmp_path):
    out = tmp_path / "all"
    arch = ["--mlp-ratio", "golden", "--attention", "mla", "--mla-latent-dim", "16", "--ra-heads", "2", "--rmlp"]
    metrics = train.main(tiny_args(corpus, out, *arch))
    assert all(math.isfinite(h["val_loss"]) for h in metrics["history"])
    recorded = read_json(out / "metrics.json")["architecture"]
    # width 64: attention 2*64*64 + 3*64*16 = 11264 a block, 2.5 x that / 128 = 220 -> 192 (nearest multiple of 64)
    assert recorded == {"mlp_ratio": "golden", "attention": "mla", "latent_dim": 16, "ra_heads": 2, "rmlp": True,
                        "mlp_hidden": 192, "mlp_attention_ratio": 2 * 64 * 192 / 11264,
                        "param_classes": {"attention": 2 * 11264, "mlp": 2 * 2 * 64 * 192,
                                          "coupling": 2 * (64 * 16 + 16 * 192), "other": 0},
                        "kv_cache_bytes_per_token": 2 * (16 + 2 * 16) * 4}  # layers x (latent + 2 heads' q) x float32
    assert metrics["final"]["params"] == train.build_model(train.parse_args([*arch, "--block-size", "8"])).num_params(False)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    with pytest.raises(ValueError, match=r"architecture: \{.*'attention': 'mla'.*\} -> None"):
        train.main(tiny_args(corpus, out, "--resume"))
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    resumed = train.main(tiny_args(corpus, out, *arch, "--resume"))  # the same architecture: nothing left to train
    assert resumed["final"]["iters"] == 4


def test_a_standard_run_records_gpt2s_own_architecture(whole):
    recorded = whole[1]["architecture"]
    assert recorded["mlp_hidden"] == 256 and recorded["mlp_attention_ratio"] == 2.0 and recorded["latent_dim"] is None
    assert recorded["kv_cache_bytes_per_token"] == 2 * 2 * 64 * 4  # layers x (k, v) x width x float32
