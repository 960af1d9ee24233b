"""The one validator of the numbers a user gives: the same rule whether the number came from
the command line (``hwsim.cli.options.SettingType``) or from a study or preset file (the
dataclasses' ``__post_init__`` call :func:`check`). Every number is checked before any work
starts: finite, in range, an integer where one is meant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.errors import ConfigError


class SettingError(ConfigError, ValueError):
    """A number outside its rule. ``str()`` is ``"setting: reason"``; the CLI shows the option
    (``--lr: ...``), a file loader the file and key (``quick.yaml: datasets[0].lr: ...``)."""

    def __init__(self, setting: str, reason: str):
        super().__init__(f"{setting}: {reason}")
        self.setting, self.reason = setting, reason


@dataclass(frozen=True)
class Rule:
    """Allowed values: ``low``..``high`` (open or closed at each end), integers or not."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    what: str = ""  # what the number is, for the message

    def describe(self) -> str:
        lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
        kind = "an integer" if self.integer else "a finite number"
        return f"{kind} in {lo}{self.low:g}, {self.high:g}{hi}" + (
            f" ({self.what})" if self.what else "")

    def allows(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not (isinstance(value, int) or float(value).is_integer()):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


# Every numeric setting of hwsim, by its library name (the CLI's option is --name-with-dashes).
RULES: dict[str, Rule] = {
    "epochs": Rule(1, 100_000, integer=True),
    "batch_size": Rule(1, 1_000_000, integer=True),
    "lr": Rule(0, 10, low_open=True, what="learning rate"),
    "momentum": Rule(0, 1, high_open=True),
    "weight_decay": Rule(0, 1),
    "warmup_frac": Rule(0, 1),
    "grad_clip": Rule(0, 1e6, low_open=True, what="gradient-norm cap"),
    "train_subset": Rule(1, 1e9, integer=True, what="training images"),
    "test_subset": Rule(1, 1e9, integer=True, what="test images"),
    "seed": Rule(0, 2**63 - 1, integer=True),
    "hwa_noise": Rule(0, 10, what="training weight noise, x max|W|"),
    "hwa_clip": Rule(0, 1e3, low_open=True, what="clip at +-K std(W)"),
    "eta": Rule(0, 1e3, what="weight-noise level"),
    "repeats": Rule(1, 1_000_000, integer=True, what="chips"),
    "calib_size": Rule(1, 1e9, integer=True, what="training images per recalibration"),
    "gpus_per_task": Rule(0, 1024),
    "cpus_per_task": Rule(0, 1024, low_open=True),
}


def check(setting: str, value, rule: str | None = None):
    """``value`` if it satisfies the rule of ``setting`` (or of ``rule``); None passes (unset).

    Raises:
        SettingError: naming the setting, the allowed values and what was given.
    """
    if value is None:
        return None
    r = RULES[rule or setting]
    if not r.allows(value):
        raise SettingError(setting, f"must be {r.describe()}, got {value!r}")
    return int(value) if r.integer else float(value)


def check_fields(obj, *names: str) -> None:
    """:func:`check` each named field of a dataclass instance (from its ``__post_init__``)."""
    for name in names:
        check(name, getattr(obj, name))
