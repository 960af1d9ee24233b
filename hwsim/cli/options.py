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


# the options of the commands that evaluate chips of a checkpoint ('hwsim infer', 'hwsim
# diagnose'): the same meaning and checks in both
eta_option = click.option("--eta", type=SettingType("eta"), default=None,
                          help="Weight-noise level (gaussian presets).")
seed_option = click.option("--seed", type=SettingType("seed"), default=0, show_default=True,
                           help="Seed of the chips (and of the calibration sample).")
data_options = [
    click.option("--dataset", default=None, help="Dataset [default: the checkpoint's]."),
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Folder holding the dataset [default: $HWSIM_DATA_DIR, else "
                      "~/.cache/hwsim/data; Fashion-MNIST also from Debian's "
                      "/usr/share/datasets/fashion-mnist]."),
]
batch_size_option = click.option("--batch-size", type=SettingType("batch_size"), default=500,
                                 show_default=True, help="Images per forward pass.")


def repeats_option(default: int, help_text: str):
    """``--repeats``: independent chips (Monte-Carlo repeats)."""
    return click.option("--repeats", type=SettingType("repeats"), default=default,
                        show_default=True, help=help_text)


def times_option(default: str, help_text: str):
    """``--t-inference``: comma-separated inference times (1s, 1h, 1d, 1w, 1y or seconds)."""
    return click.option("--t-inference", "times", default=default, show_default=True,
                        help=help_text)


def calib_size_option(help_text: str):
    """``--calib-size N``: training images for the BN statistics."""
    return click.option("--calib-size", type=SettingType("calib_size"), default=None,
                        metavar="N", help=help_text)


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


