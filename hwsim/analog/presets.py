"""Device presets: YAML files in ``device_configs/`` validated into :class:`DevicePreset`.

A preset says what happens to a layer's weights and to its matrix-vector products when the
layer lives on an analog tile:

* ``noise_model`` — aihwkit's phenomenological device model: programming noise, drift and
  read noise (``pcm``, ``reram-cmo``, ``reram-wan2022``) or ``none``;
* ``drift_compensation`` — aihwkit's ``GlobalDriftCompensation`` or ``none``;
* ``forward`` — the tile's forward IO non-idealities (DAC/ADC, output noise, bounds, noise
  and bound management), or ``is_perfect: true`` for an exact product;
* ``mapping`` — how a layer maps onto tiles (tile size, weight scaling, digital bias);
* ``weight_noise`` — hwsim's own weight perturbation, the noise of Fagbohungbe & Qian
  (2022): additive ``w + eta * std(W) * N(0,1)`` or multiplicative ``w * (1 + eta * N(0,1))``
  per conv/linear layer, drawn once per Monte-Carlo repeat.

This module knows nothing of aihwkit: :mod:`hwsim.engine.rpu` alone turns a preset into
aihwkit's configuration objects.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hwsim.config import build, load, to_plain
from hwsim.errors import ConfigError, SimulationError
from hwsim.resources import shipped_dir
from hwsim.util.timefmt import format_time
from hwsim.validate import check

NoiseModelType = Literal["none", "pcm", "reram-cmo", "reram-wan2022"]

# aihwkit's ReRamCMONoiseModel: minimal conductance (uS), the value of a tile's smallest weight.
RERAM_CMO_G_MIN = 9.0
# ReRamWan2022NoiseModel's polynomial fits exist only at these times (seconds).
WAN2022_TIMES = (1.0, 86400.0, 172800.0)


def _check_finite(spec) -> None:
    """ValueError naming the first number of ``spec`` that is NaN or infinite (.nan, .inf)."""
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name}: must be a finite number, got {value}")


@dataclass(frozen=True)
class NoiseModelSpec:
    """aihwkit inference noise model (programming noise, drift, read noise)."""

    type: NoiseModelType = "none"
    g_max: float | None = None  # µS the largest |weight| of a tile maps to; None: model default
    prog_noise_scale: float = 1.0  # multiplies the programming noise
    read_noise_scale: float = 1.0  # multiplies the 1/f read noise (pcm, reram-cmo)
    drift_scale: float = 1.0  # multiplies drift (pcm, reram-cmo)
    acceptance_range: float = 0.2  # reram-cmo: program-and-verify acceptance range, % (0.2 or 2)

    def __post_init__(self):
        _check_finite(self)
        for name in ("prog_noise_scale", "read_noise_scale", "drift_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.g_max is not None and self.g_max <= 0:
            raise ValueError(f"g_max: must be > 0, got {self.g_max}")
        if self.acceptance_range not in (0.2, 2.0):
            raise ValueError("acceptance_range: choose 0.2 or 2")
        if self.type == "reram-cmo" and self.g_max is not None and self.g_max <= RERAM_CMO_G_MIN:
            raise ValueError(
                f"g_max: reram-cmo maps weights onto [g_min, g_max] with aihwkit's g_min = "
                f"{RERAM_CMO_G_MIN:g} uS: g_max must exceed it, got {self.g_max:g}")


@dataclass(frozen=True)
class ForwardSpec:
    """Forward-pass IO of a tile (aihwkit ``IOParameters``); defaults are aihwkit's."""

    is_perfect: bool = False  # exact product: none of the below applies
    inp_res: float = 1 / 126  # input DAC step relative to the input range (7 bit signed)
    inp_bound: float = 1.0
    inp_noise: float = 0.0
    out_res: float = 1 / 510  # output ADC step relative to the output range (9 bit signed)
    out_bound: float = 12.0
    out_noise: float = 0.06  # additive Gaussian output noise, drawn at every forward
    noise_management: Literal["abs_max", "max", "none"] = "abs_max"
    bound_management: Literal["iterative", "none"] = "iterative"

    def __post_init__(self):
        _check_finite(self)
        for name in ("inp_res", "inp_bound", "inp_noise", "out_res", "out_bound", "out_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        # A bound of 0 means "unbounded" to aihwkit, but its quantiser's step is res x 2 x
        # bound: a zero step turns every value into NaN.
        for side, what in (("inp", "DAC"), ("out", "ADC")):
            if getattr(self, f"{side}_bound") == 0 and getattr(self, f"{side}_res") > 0:
                raise ValueError(
                    f"{side}_bound: 0 (unbounded) cannot be combined with {side}_res > 0: "
                    f"aihwkit's {what} step is {side}_res x 2 x {side}_bound, so every value "
                    f"would become NaN; give a positive {side}_bound or set {side}_res: 0")


@dataclass(frozen=True)
class MappingSpec:
    """How layers map onto tiles (aihwkit ``MappingParameter``).

    aihwkit's default ``weight_scaling_omega=0`` leaves weights unscaled on the tile, so the
    small weights of a conv produce small outputs that the fixed output noise swamps (relative
    output error 0.47 on a ResNet-20, against 0.06 with omega=1). hwsim's presets map each
    tile's largest |weight| to 1 (omega=1, per tile) and undo the scale digitally after the
    ADC, which is what a post-training mapping onto real hardware would do.
    """

    max_input_size: int = 512
    max_output_size: int = 512
    weight_scaling_omega: float = 1.0
    weight_scaling_columnwise: bool = False
    digital_bias: bool = True

    @property
    def label(self) -> str:
        """``"per-tile, omega 1"``, ``"per-column, omega 0.8"`` or ``"unscaled (omega 0)"``."""
        if self.weight_scaling_omega == 0:
            return "unscaled (omega 0)"
        kind = "per-column" if self.weight_scaling_columnwise else "per-tile"
        return f"{kind}, omega {self.weight_scaling_omega:g}"

    def __post_init__(self):
        _check_finite(self)
        for name in ("max_input_size", "max_output_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.weight_scaling_omega < 0:
            raise ValueError(f"weight_scaling_omega: must be >= 0, got {self.weight_scaling_omega}")
        if not self.digital_bias:
            raise ValueError(
                "digital_bias: false (a bias on the analog tile) is not supported: aihwkit's "
                "torch tile, on which the fast and aihwkit engines run, keeps biases digital; "
                "set digital_bias: true (or leave it out)")


@dataclass(frozen=True)
class WeightNoiseSpec:
    """The paper's Gaussian weight noise, relative to each layer's weight spread."""

    type: Literal["additive", "multiplicative"]
    eta: float

    def __post_init__(self):
        check("eta", self.eta)


@dataclass(frozen=True)
class DevicePreset:
    """A validated device preset. ``path`` is the file it came from (for messages)."""

    name: str
    description: str
    source: str
    noise_model: NoiseModelSpec = field(default_factory=NoiseModelSpec)
    drift_compensation: Literal["global", "none"] = "none"
    forward: ForwardSpec = field(default_factory=ForwardSpec)
    mapping: MappingSpec = field(default_factory=MappingSpec)
    weight_noise: WeightNoiseSpec | None = None
    path: str = ""

    @property
    def time_dependent(self) -> bool:
        """Whether accuracy depends on the inference time (a device model with drift)."""
        return self.noise_model.type != "none"

    @property
    def eta(self) -> float | None:
        return self.weight_noise.eta if self.weight_noise else None

    def with_eta(self, eta: float) -> DevicePreset:
        """This preset with weight-noise level ``eta`` (ConfigError if it has no weight noise,
        SettingError for a level outside :data:`hwsim.validate.RULES`)."""
        eta = check("eta", eta)
        if self.weight_noise is None:
            raise ConfigError(f"device preset {self.name!r} has no weight_noise: --eta does not "
                              "apply (use gaussian or gaussian-mult)")
        noise = dataclasses.replace(self.weight_noise, eta=eta)
        return dataclasses.replace(self, weight_noise=noise)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def check_times(self, times: list[float]) -> None:
        """SimulationError if the noise model is undefined at one of ``times`` (seconds)."""
        if self.noise_model.type == "reram-wan2022":
            bad = [t for t in times if float(t) not in WAN2022_TIMES]
            if bad:
                raise SimulationError(
                    f"device preset {self.name!r} (aihwkit ReRamWan2022NoiseModel) is defined "
                    f"only at t = 1s, 1d, 2d; asked for {', '.join(format_time(t) for t in bad)}"
                )


# ------------------------------------------------------------------ finding and loading


def presets_dir() -> Path:
    """``$HWSIM_DEVICE_CONFIGS``, else the presets shipped with hwsim (``device_configs/``)."""
    env = os.environ.get("HWSIM_DEVICE_CONFIGS")
    return Path(env) if env else shipped_dir("device_configs")


def list_presets() -> list[str]:
    """Names of the presets shipped in :func:`presets_dir`."""
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def load_preset(name_or_path: str | Path) -> DevicePreset:
    """A preset by name (``pcm``) or by the path of a YAML file.

    Raises:
        ConfigError: unknown name (lists the presets) or an invalid file (names file and key).
    """
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or os.sep in text or path.is_file()):
        path = presets_dir() / f"{text}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown device preset {text!r}; choose one of: {', '.join(list_presets())} "
                "(or give the path of a YAML file)"
            )
    preset = load(DevicePreset, path)
    return dataclasses.replace(preset, path=str(path))


def preset_from_dict(data: dict, where: str) -> DevicePreset:
    """Rebuild a preset stored as plain data (e.g. in an analog checkpoint)."""
    return build(DevicePreset, data, where)
