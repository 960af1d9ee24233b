"""Options shared by several commands, and the click type of every numeric option."""

from __future__ import annotations

from pathlib import Path

import click

from hwsim.analog.presets import load_preset
from hwsim.validate import RULES, SettingError, check


class SettingType(click.ParamType):
    """A number checked by the rule of its setting (:data:`hwsim.validate.RULES`): the same
    rule as in study and preset files."""

    def __init__(self, setting: str):
        self.setting = setting
        self.name = "integer" if RULES[setting].integer else "number"

    def convert(self, value, param, ctx):
        number = value
        if isinstance(value, str):
            try:
                number = int(value) if RULES[self.setting].integer else float(value)
            except ValueError:
                self.fail(f"{value!r} is not {'an' if self.name == 'integer' else 'a'} "
                          f"{self.name}", param, ctx)
        try:
            return check(self.setting, number)
        except SettingError as e:
            self.fail(e.reason, param, ctx)


def compute_device_option(help_text: str):
    """``--compute-device auto|cpu|cuda``: the torch device (``--device`` is a preset)."""
    return click.option("--compute-device", default="auto", show_default=True,
                        type=click.Choice(["auto", "cpu", "cuda"]),
                        help=help_text + " auto: CUDA when present, else the CPU.")




model_options = [
    click.option("--model", "model_path", required=True,
                 type=click.Path(dir_okay=False, path_type=Path),
                 help="A checkpoint from 'hwsim train', or one from elsewhere (a state_dict, "
                      "or a Lightning/timm/torchvision-style dict holding one) with --arch and "
                      "--dataset."),
    click.option("--arch", default=None,
                 help="Architecture of a checkpoint from elsewhere: a name from 'hwsim "
                      "models', torchvision:NAME or package.module:function / "
                      "path/to/file.py:function."),
]


def add_options(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


def preset_of(device: str, eta: float | None):
    """The preset named by ``--device``, with ``--eta`` applied when given."""
    p = load_preset(device)
    return p.with_eta(eta) if eta is not None else p


