"""Typed settings from a trainer's parsed flags: the base every settings family shares.

A family (`lib.optim`, `lib.pruning`, `lib.monitor`, `lib.tracking`) owns
its flags (`add_arguments(parser)`: each default is written there once and
equals the Kconfig symbol's default), its checks (`check(parser, args)`: one
line naming the flag), and a frozen dataclass subclassing `Settings` whose
fields are flag destinations. `Settings.from_args(args)` fills the fields
from the parsed flags and has no defaults of its own: a flag the trainer's
parser lacks is an AttributeError that names it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Settings:
    @classmethod
    def from_args(cls, args):
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
