"""GPT-2's ablation steps: an ordered registry of cumulative architecture changes, one matrix run each.

CONFIG_GPT2_ABLATION_STEPS lists steps by name (gpt2/Kconfig.ablation);
`lib.matrix` turns each listed step into a run of its own
(`gpt2_<step>_<optimizer>...`) in REGISTRY order, whatever order the list
has. Each step applies its own change on top of every earlier step of
REGISTRY, listed or not (cumulative), so "baseline ratio" compares plain
GPT-2 with the full RATIO model:

  baseline  GPT-2: 4x MLP, standard attention, no RA, no R-MLP
  golden    + MLP sized to 2.5x attention parameters   --mlp-ratio golden
  mla       + multi-head latent attention              --attention mla
  ra        + reciprocal attention                     --ra-heads GPT2_RA_HEADS, or all when it is 0
  rmlp      + reciprocal MLP coupling                  --rmlp
  ratio     rmlp's model, state-pruned with bitter9 under RATIO budgets
            (--ratio-preserve) to CONFIG_GPT2_ABLATION_SPARSITY

`argv(args, step, config)` replaces the configuration's own architecture
flags in a trainer command line by the step's, so a step's run is the same
whatever the GPT-2 menu says about the architecture (its MLA latent size
and RA head count are kept: they parameterise a change, they do not make
one). Torch-free: the matrix imports it to plan runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The architecture flags a step decides (gpt2/train.py's, from GPT2_MLP_RATIO, GPT2_ATTENTION, GPT2_RA_HEADS,
# GPT2_RMLP): each takes a value except the switch --rmlp.
MLP_RATIO, ATTENTION, RA_HEADS, RMLP = "--mlp-ratio", "--attention", "--ra-heads", "--rmlp"
LATENT_DIM = "--mla-latent-dim"  # MLA's latent size: kept from the configuration, dropped without MLA
SWITCHES = (RMLP,)
VALUED = (MLP_RATIO, ATTENTION, RA_HEADS, LATENT_DIM)
RA_FROM_CONFIG = "config"  # the ra step's head count: CONFIG_GPT2_RA_HEADS when above 0, else every head
RATIO_PRESERVE = "--ratio-preserve"


@dataclass(frozen=True)
class Step:
    """One ablation step: its own change (flag -> value; True/False for a switch) on top of every earlier step."""

    name: str
    description: str
    changes: tuple[tuple[str, object], ...]
    pruning: tuple[str, str] | None = None  # (method, variant): a pruned step, with RATIO budgets (--ratio-preserve)


REGISTRY: tuple[Step, ...] = (
    Step("baseline", "GPT-2 as published: 4x MLP, standard attention, no reciprocal attention or MLP",
         ((MLP_RATIO, "gpt2"), (ATTENTION, "standard"), (RA_HEADS, "0"), (RMLP, False))),
    Step("golden", "+ golden-ratio MLP: MLP parameters 2.5x attention parameters", ((MLP_RATIO, "golden"),)),
    Step("mla", "+ multi-head latent attention: keys and values from a shared low-rank latent", ((ATTENTION, "mla"),)),
    Step("ra", "+ reciprocal attention: k_i . q_j mixed into the heads by a learned weight",
         ((RA_HEADS, RA_FROM_CONFIG),)),
    Step("rmlp", "+ reciprocal MLP: a learned coupling from the attention path into the MLP", ((RMLP, True),)),
    Step("ratio", "the rmlp model, state-pruned with bitter9 under RATIO budgets (MLP:attention kept at 2.5)", (),
         pruning=("state", "bitter9")),
)
STEPS = {s.name: s for s in REGISTRY}
NAMES = tuple(STEPS)


def parse(text: str | None) -> list[str]:
    """The step names a CONFIG_GPT2_ABLATION_STEPS value lists, in REGISTRY order; [] for an empty value (ablation off).

    Names are separated by spaces or commas; an unknown or repeated name is a ValueError listing the valid steps.
    """
    words = [w for w in re.split(r"[\s,]+", str(text or "")) if w]
    for word in words:
        if word not in STEPS:
            raise ValueError(f"unknown ablation step {word!r}; valid steps: {', '.join(NAMES)}")
    repeated = sorted({w for w in words if words.count(w) > 1}, key=NAMES.index)
    if repeated:
        raise ValueError(f"ablation step {repeated[0]!r} is listed twice; list each of {', '.join(NAMES)} at most once")
    return [name for name in NAMES if name in words]


def step(name: str) -> Step:
    """The registry entry of `name`; an unknown name is a ValueError listing the valid steps."""
    if name not in STEPS:
        raise ValueError(f"unknown ablation step {name!r}; valid steps: {', '.join(NAMES)}")
    return STEPS[name]


def ra_heads(config: dict) -> str:
    """The ra step's --ra-heads: CONFIG_GPT2_RA_HEADS when it is above 0, else "all"."""
    configured = config.get("GPT2_RA_HEADS") or 0
    return str(configured) if int(configured) > 0 else "all"


def architecture(name: str, config: dict) -> dict[str, object]:
    """Flag -> value of step `name`'s model: the changes of every REGISTRY step up to and including it, in order."""
    wanted = step(name)
    out: dict[str, object] = {}
    for s in REGISTRY:
        for flag, value in s.changes:
            out[flag] = ra_heads(config) if value == RA_FROM_CONFIG else value
        if s is wanted:
            return out
    raise AssertionError("unreachable: step() returned a registry entry")


def flags(name: str, config: dict) -> list[str]:
    """The trainer flags of step `name`: its architecture (switches only when on), and --ratio-preserve for a pruned step."""
    out: list[str] = []
    for flag, value in architecture(name, config).items():
        if flag in SWITCHES:
            out += [flag] if value else []
        else:
            out += [flag, str(value)]
    if step(name).pruning is not None:
        out.append(RATIO_PRESERVE)
    return out


def without_architecture(args: list[str], keep_latent: bool) -> list[str]:
    """`args` without the flags a step decides: the architecture, --ratio-preserve, and --mla-latent-dim unless
    `keep_latent`."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg in SWITCHES or arg == RATIO_PRESERVE:
            i += 1
        elif arg in VALUED and not (arg == LATENT_DIM and keep_latent):
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def argv(args: list[str], name: str, config: dict) -> list[str]:
    """Trainer arguments `args` (the configuration's) with step `name`'s flags in place of the configuration's own.

    The architecture flags (and --ratio-preserve) are removed wherever they are and the step's appended; the MLA
    latent size stays when the step has MLA.
    """
    mla = architecture(name, config)[ATTENTION] == "mla"
    return without_architecture(args, keep_latent=mla) + flags(name, config)
