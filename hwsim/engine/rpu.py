"""Device presets as aihwkit objects: the only translation of a preset into aihwkit's
``(Torch)InferenceRPUConfig`` and noise models."""

from __future__ import annotations

import dataclasses
from typing import Literal

from hwsim.analog.presets import DevicePreset, ForwardSpec, MappingSpec, NoiseModelSpec


def to_rpu_config(preset: DevicePreset, tile: Literal["torch", "cpp"] = "torch"):
    """The aihwkit ``(Torch)InferenceRPUConfig`` for ``preset``.

    ``torch`` tiles draw every random number from torch's seedable RNG (reproducible runs);
    ``cpp`` tiles are aihwkit's C++ tiles, whose forward noise is seeded from the clock.
    """
    from aihwkit.inference import GlobalDriftCompensation
    from aihwkit.simulator.configs import InferenceRPUConfig, TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType

    cfg = TorchInferenceRPUConfig() if tile == "torch" else InferenceRPUConfig()
    # hwsim's field names are aihwkit's; the two management types map onto its enums
    for f in dataclasses.fields(ForwardSpec):
        if f.name not in ("noise_management", "bound_management"):
            setattr(cfg.forward, f.name, getattr(preset.forward, f.name))
    cfg.forward.noise_management = {
        "abs_max": NoiseManagementType.ABS_MAX, "max": NoiseManagementType.MAX,
        "none": NoiseManagementType.NONE}[preset.forward.noise_management]
    cfg.forward.bound_management = {
        "iterative": BoundManagementType.ITERATIVE,
        "none": BoundManagementType.NONE}[preset.forward.bound_management]
    for f in dataclasses.fields(MappingSpec):
        setattr(cfg.mapping, f.name, getattr(preset.mapping, f.name))
    model = make_noise_model(preset.noise_model)
    if model is not None:
        cfg.noise_model = model
    cfg.drift_compensation = GlobalDriftCompensation() if preset.drift_compensation == "global" \
        else None
    return cfg


def make_noise_model(spec: NoiseModelSpec):
    """aihwkit noise model object for ``spec`` (None for ``type: none``)."""
    from aihwkit.inference import PCMLikeNoiseModel, ReRamCMONoiseModel, ReRamWan2022NoiseModel

    kw = {} if spec.g_max is None else {"g_max": spec.g_max}
    if spec.type == "pcm":
        return PCMLikeNoiseModel(prog_noise_scale=spec.prog_noise_scale,
                                 read_noise_scale=spec.read_noise_scale,
                                 drift_scale=spec.drift_scale, **kw)
    if spec.type == "reram-cmo":
        return ReRamCMONoiseModel(prog_noise_scale=spec.prog_noise_scale,
                                  read_noise_scale=spec.read_noise_scale,
                                  drift_scale=spec.drift_scale,
                                  acceptance_range=spec.acceptance_range, **kw)
    if spec.type == "reram-wan2022":
        return ReRamWan2022NoiseModel(noise_scale=spec.prog_noise_scale, **kw)
    return None
