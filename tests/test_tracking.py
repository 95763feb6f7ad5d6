"""Tracker names and TRACKER= override, project names, secrets, wandb mode, failures become warnings."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import kconfiglib
import pytest

from lib import config, tracking
from lib.tracking import wandb_tracker
from lib.tracking.base import Tracker
from lib.tracking.fanout import Trackers

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("wandb,trackio", {"TRACKER_TRACKIO": "y", "TRACKER_WANDB": "y"}),
        ("trackio", {"TRACKER_TRACKIO": "y", "TRACKER_WANDB": "n"}),
        (" WandB ", {"TRACKER_TRACKIO": "n", "TRACKER_WANDB": "y"}),
        ("none", {"TRACKER_TRACKIO": "n", "TRACKER_WANDB": "n"}),
    ],
)
def test_tracker_symbols_maps_a_tracker_override_to_kconfig(spec, expected):
    assert tracking.tracker_symbols(spec) == expected


@pytest.mark.parametrize("spec", ["tensorboard", "wandb,mlflow"])
def test_unknown_tracker_override_lists_the_valid_names(spec):
    with pytest.raises(ValueError, match=r"unknown tracker .*valid: trackio, wandb, none"):
        tracking.tracker_symbols(spec)


def test_override_symbols_exist_in_kconfig_and_reach_the_trainer_flag(monkeypatch):
    monkeypatch.chdir(REPO)  # Kconfig's `source` lines are relative to the repository root
    kconf = kconfiglib.Kconfig(str(REPO / "Kconfig"), warn_to_stderr=False)
    for name, value in tracking.tracker_symbols("wandb,trackio").items():
        sym = kconf.syms[name]
        assert sym.nodes and sym.nodes[0].prompt, f"{name} must be a prompted Kconfig symbol"
        assert sym.set_value(value) and sym.str_value == value
    values = config.values(kconf)
    argv = config.trainer_argv(values, "lenet5")
    assert argv[argv.index("--tracker") + 1] == "trackio,wandb"
    assert argv[argv.index("--tracking-dir") + 1] == "tracking"
    assert tracking.flag_value(values) == "trackio,wandb"
    for name, value in tracking.tracker_symbols("none").items():
        kconf.syms[name].set_value(value)
    values = config.values(kconf)
    argv = config.trainer_argv(values, "lenet5")
    assert "--tracker" not in argv and "--tracking-dir" not in argv  # the trainer's default: none


def test_monitor_settings_reach_the_trainer(monkeypatch):
    monkeypatch.chdir(REPO)
    kconf = kconfiglib.Kconfig(str(REPO / "Kconfig"), warn_to_stderr=False)
    kconf.syms["MONITOR_CPU"].set_value("y")
    kconf.syms["MONITOR_INTERVAL"].set_value("0.5")
    argv = config.trainer_argv(config.values(kconf), "lenet5")
    assert argv[argv.index("--monitor") + 1] == "cpu" and argv[argv.index("--monitor-interval") + 1] == "0.5"


def test_project_name_is_model_and_five_hex_of_the_checkout_path(tmp_path):
    name = tracking.project_name("lenet5")
    assert name.startswith("lenet5-") and len(name) == len("lenet5-") + 5
    int(name[-5:], 16)
    assert tracking.project_name("lenet5", REPO) == name
    assert tracking.project_name("lenet5", tmp_path) != name  # another checkout, another project


def test_project_name_is_stable_across_invocations_and_directories(tmp_path):
    code = "from lib.tracking import project_name; print(project_name('resnet18'))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    names = {
        subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()
        for cwd in (REPO, tmp_path, REPO)
    }
    assert names == {tracking.project_name("resnet18")}


def test_secrets_are_dropped_by_key_and_by_value():
    env = {"WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567", "HF_TOKEN": "hf_secretsecret", "HOME": "/root"}
    data = {
        "lr": 0.1,
        "wandb_api_key": "x",
        "nested": {"token": "y", "note": "key is 0123456789abcdef0123456789abcdef01234567"},
        "argv": ["--x", "hf_secretsecret"],
        "tokenizer": "gpt2",
        "home": "/root",
    }
    clean = tracking.redact(data, environ=env)
    assert clean == {"lr": 0.1, "nested": {"note": "<redacted>"}, "argv": ["--x", "<redacted>"], "tokenizer": "gpt2", "home": "/root"}


def test_run_config_is_the_flags_plus_identity_without_secrets(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    args = SimpleNamespace(lr=0.01, tracker="wandb", data_dir="k" * 40, fn=print)
    cfg = tracking.run_config(args, model="lenet5", run_id="lenet5_sgd_none")
    assert cfg == {"lr": 0.01, "tracker": "wandb", "data_dir": "<redacted>", "model": "lenet5", "run_id": "lenet5_sgd_none"}


def test_wandb_is_offline_unless_logged_in(tmp_path):
    no_netrc = {"NETRC": str(tmp_path / "missing")}
    assert wandb_tracker.mode(no_netrc) == "offline"
    assert wandb_tracker.mode({**no_netrc, "WANDB_API_KEY": "abc"}) == "online"
    assert wandb_tracker.mode({"WANDB_MODE": "disabled", "WANDB_API_KEY": "abc"}) == "disabled"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    netrc.chmod(0o600)
    assert wandb_tracker.mode({"NETRC": str(netrc)}) == "online"
    assert wandb_tracker.mode({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"}) == "offline"


def _open(spec, directory, **kw):
    return tracking.open_trackers(spec, project="lenet5-abcde", run_name="lenet5_sgd_none", config={"lr": 0.1}, directory=directory, **kw)


def test_unknown_tracker_name_is_a_warning_not_a_failure(tmp_path, capsys):
    t = _open("bogus,none", tmp_path)
    assert t.trackers == [] and t.warnings == ["tracking: unknown tracker 'bogus' (valid: trackio, wandb, none); continuing without it"]
    assert "unknown tracker 'bogus'" in capsys.readouterr().err
    t.log({"loss": 1.0}, step=1)  # no tracker: nothing happens, nothing fails
    t.finish()


def test_wandb_selected_but_not_importable_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    t = _open("wandb", tmp_path)
    assert t.trackers == []
    assert len(t.warnings) == 1 and "wandb selected but not importable" in t.warnings[0] and "pip install wandb" in t.warnings[0]


def test_trackio_selected_but_not_importable_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trackio", None)
    t = _open("trackio", tmp_path)
    assert t.trackers == [] and "trackio selected but not importable" in t.warnings[0]


def test_unwritable_tracking_directory_is_a_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    t = _open("trackio,wandb", blocker / "tracking")
    assert t.trackers == []
    assert len(t.warnings) == 2 and all("is not writable" in w and "--tracking-dir" in w for w in t.warnings)


class Recorder(Tracker):
    def __init__(self, name, fail_on=None):
        self.name, self.fail_on, self.calls = name, fail_on, []

    def _call(self, what, *args):
        if what == self.fail_on:
            raise ConnectionError("server went away")
        self.calls.append((what, *args))

    def log(self, metrics, step):
        self._call("log", metrics, step)

    def log_memory(self, sample):
        self._call("log_memory", sample)

    def summary(self, final):
        self._call("summary", final)

    def finish(self, exit_code=0):
        self._call("finish", exit_code)


def test_a_tracker_failing_mid_run_is_dropped_with_a_warning_and_the_others_go_on():
    good, bad = Recorder("good"), Recorder("bad", fail_on="log_memory")
    t = Trackers([good, bad])
    t.log({"loss": 1.0}, step=1)
    t.log_memory({"t": 0.0, "rss_mib": 10.0})
    t.log_memory({"t": 1.0, "rss_mib": 11.0})
    t.finish(exit_code=0)
    assert [c[0] for c in good.calls] == ["log", "log_memory", "log_memory", "finish"]
    assert [c[0] for c in bad.calls] == ["log", "finish"]  # closed once it failed
    assert t.warnings == ["tracking: bad failed in log_memory (ConnectionError: server went away); continuing without it"]
    assert t.names == []


def test_no_tracker_asked_opens_nothing(tmp_path):
    args = SimpleNamespace(tracker="none", tracking_dir=str(tmp_path / "t"))
    t = tracking.for_run(args, model="lenet5", dataset="digits", run_dir=tmp_path / "m" / "lenet5_sgd_none")
    assert t.trackers == [] and t.warnings == [] and not (tmp_path / "t").exists()


class RecordingRun:
    """Stands in for a wandb run: records what the tracker hands wandb."""

    def __init__(self):
        self.summary, self.logged, self.defined, self.exit_code = {}, [], {}, None

    def define_metric(self, key, step_metric=None):
        self.defined[key] = step_metric

    def log(self, values):
        self.logged.append(values)

    def finish(self, exit_code):
        self.exit_code = exit_code


def test_wandb_tracker_hands_wandb_the_trainers_values(tmp_path, monkeypatch):
    """The values side of the wandb path; the offline files wandb makes of them are checked in test_tracking_runs."""
    run, inits = RecordingRun(), []
    fake = SimpleNamespace(init=lambda **kw: inits.append(kw) or run, Settings=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = wandb_tracker.WandbTracker("lenet5-abcde", "lenet5_sgd_none", {"lr": 0.1}, tmp_path, group="m")
    tracker.log({"train_loss": 0.5, "val_accuracy": 90.0, "note": "text is not plotted"}, step=1)
    tracker.log({"train_loss": 0.25, "val_accuracy": 95.0}, step=2)
    tracker.log_memory({"t": 0.5, "phase": "train", "rss_mib": 100.0})
    tracker.summary({"accuracy": 95.0, "best_at": 2, "stopped_by": "epochs"})
    tracker.finish(exit_code=0)
    [init] = inits
    assert {k: init[k] for k in ("project", "name", "group", "config", "dir", "mode")} == {
        "project": "lenet5-abcde", "name": "lenet5_sgd_none", "group": "m", "config": {"lr": 0.1},
        "dir": str(tmp_path), "mode": "offline"}
    assert run.logged == [
        {"train_loss": 0.5, "val_accuracy": 90.0, "epoch": 1},
        {"train_loss": 0.25, "val_accuracy": 95.0, "epoch": 2},
        {"memory/t": 0.5, "memory/rss_mib": 100.0},
    ]
    assert run.defined == {"epoch": None, "memory/t": None, "memory/*": "memory/t", "train_loss": "epoch", "val_accuracy": "epoch"}
    assert run.summary == {"final/accuracy": 95.0, "final/best_at": 2} and run.exit_code == 0
