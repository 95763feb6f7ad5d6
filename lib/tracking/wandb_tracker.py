"""Weights & Biases: offline unless the person is logged in.

The mode is WANDB_MODE when it is set; otherwise "online" when credentials
exist (WANDB_API_KEY, or a netrc entry for the W&B host) and "offline"
otherwise, so a machine that never logged in makes no network calls. Offline
runs are written under `<tracking dir>/wandb/` and can be uploaded later with
`wandb sync`. Epoch metrics are plotted against `epoch`, memory samples
against `memory/t`; wandb's own system poller is off (lib.monitor samples).
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from lib.tracking.base import Tracker, TrackerUnavailable, scalars, writable_dir


def logged_in(environ=None) -> bool:
    """Whether W&B credentials exist locally (nothing is sent anywhere to find out)."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(env.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def mode(environ=None) -> str:
    env = os.environ if environ is None else environ
    if env.get("WANDB_MODE"):
        return env["WANDB_MODE"]
    return "online" if logged_in(env) else "offline"


def import_wandb():
    try:
        import wandb
    except Exception as e:
        raise TrackerUnavailable(f"wandb selected but not importable ({type(e).__name__}: {e}); pip install wandb") from None
    return wandb


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, project: str, run_name: str, config: dict, directory, *, group: str | None = None, resume: bool = False):
        self.directory = writable_dir(Path(directory))
        wandb = import_wandb()
        if os.environ.get("WANDB_MODE") == "":  # set but empty: wandb would reject it; treat as unset
            del os.environ["WANDB_MODE"]
        self.mode = mode()
        self.run = wandb.init(
            project=project,
            name=run_name,
            group=group,
            config=config,
            dir=str(self.directory),
            mode=self.mode,
            settings=wandb.Settings(
                silent=True, console="off", x_disable_stats=True, save_code=False, disable_git=True,
            ),
        )
        self.run.define_metric("epoch")
        self.run.define_metric("memory/t")
        self.run.define_metric("memory/*", step_metric="memory/t")
        self.defined: set[str] = set()

    def log(self, metrics: dict, step: int) -> None:
        values = scalars(metrics)
        values.setdefault("epoch", step)
        for key in values:
            if key not in self.defined and key != "epoch":
                self.run.define_metric(key, step_metric="epoch")
                self.defined.add(key)
        self.run.log(values)

    def log_memory(self, sample: dict) -> None:
        self.run.log({f"memory/{k}": v for k, v in sample.items() if k != "phase"})

    def summary(self, final: dict) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in scalars(final).items()})

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)
