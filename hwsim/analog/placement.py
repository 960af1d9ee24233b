"""Which layers the analog tiles hold, which stay digital (and why), and the digital share of
the multiply-accumulates.

hwsim simulates ``nn.Conv2d`` (ungrouped, undilated, zero-padded) and ``nn.Linear`` on the
tiles: aihwkit refuses grouped convs (``groups != 1``, e.g. MobileNet's depthwise convs) and
any padding but zeros, and hwsim's fast engine computes undilated 2-D convs only. Every other
layer with weights (Conv1d/Conv3d, transposed convs, subclasses with a forward of their own)
stays a digital layer of the model, never silently: :func:`place_layers` lists each with its
reason and its multiply-accumulates, measured by forward hooks on one sample input. Every
engine, hwsim's weight noise and HWA training take the analog layers from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from hwsim.analog.bn import describe_folding

WEIGHT_LAYERS = (_ConvNd, nn.Linear)


def digital_reason(module: nn.Module) -> str | None:
    """Why ``module`` (a conv or linear layer) stays digital; None if the tiles hold it."""
    kind = type(module)
    if kind is nn.Linear:
        return None
    if kind is nn.Conv2d:
        if module.groups != 1:
            return f"grouped conv (groups={module.groups}): aihwkit tiles hold ungrouped convs"
        if module.padding_mode != "zeros":
            return f"padding_mode {module.padding_mode!r}: aihwkit pads with zeros only"
        if isinstance(module.padding, str):
            return f"padding={module.padding!r}: not simulated"
        if tuple(module.dilation) != (1, 1):
            return f"dilated conv (dilation={tuple(module.dilation)}): not simulated"
        return None
    if isinstance(module, _ConvTransposeNd):
        return f"transposed conv ({kind.__name__}): not simulated"
    if kind in (nn.Conv1d, nn.Conv3d):
        return f"{kind.__name__}: not simulated (hwsim simulates Conv2d and Linear)"
    return f"{kind.__name__}: not simulated (a subclass; its forward may differ)"


def analog_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of ``model`` that go on analog tiles, by module name (module order)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, WEIGHT_LAYERS) and digital_reason(m) is None}


def digital_layers(model: nn.Module) -> dict[str, str]:
    """The conv/linear layers of ``model`` that stay digital, by name, with the reason."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, WEIGHT_LAYERS):
            reason = digital_reason(m)
            if reason is not None:
                out[name] = reason
    return out


@dataclass(frozen=True)
class Placement:
    """Where each conv/linear layer runs, and the multiply-accumulates of one input image."""

    analog_macs: int
    digital: tuple[tuple[str, str, int], ...]  # (layer, reason, MACs), module order
    n_analog: int

    @property
    def digital_macs(self) -> int:
        return sum(m for _, _, m in self.digital)

    @property
    def digital_mac_share(self) -> float:
        """The share of the conv/linear MACs computed by digital layers."""
        total = self.analog_macs + self.digital_macs
        return self.digital_macs / total if total else 0.0

    def to_dict(self) -> dict:
        return {"n_analog": self.n_analog, "analog_macs": self.analog_macs,
                "digital": [list(d) for d in self.digital],
                "digital_mac_share": self.digital_mac_share}

    def summary(self) -> str:
        return describe_placement(self.to_dict())


def describe_placement(d: dict) -> str:
    """:meth:`Placement.summary` from its ``to_dict`` (as a checkpoint stores it)."""
    digital = d["digital"]
    if not digital:
        return f"analog tiles: all {d['n_analog']} conv/linear layers"
    reasons: dict[str, list[str]] = {}
    for name, reason, _ in digital:
        reasons.setdefault(reason.split(" (")[0].split(":")[0], []).append(name)
    shown = "; ".join(f"{len(names)} {why} ({', '.join(names[:3])}"
                      f"{', ...' if len(names) > 3 else ''})" for why, names in reasons.items())
    return (f"analog tiles: {d['n_analog']} conv/linear layers; kept digital: {len(digital)} "
            f"layers, {100 * d['digital_mac_share']:.1f}% of the multiply-accumulates: {shown}")


@torch.no_grad()
def place_layers(model: nn.Module, input_shape: tuple[int, ...]) -> Placement:
    """Which conv/linear layers of ``model`` go analog, with each one's multiply-accumulates
    for one input of ``input_shape`` (C, H, W), counted by forward hooks (a layer called twice
    counts twice; one never called, 0). The model's train/eval modes are left as they were.
    """
    macs: dict[str, int] = {}

    def hook(name):
        def count(module, inputs, output):
            k = int(torch.tensor(module.weight.shape[2:]).prod()) if module.weight.dim() > 2 \
                else 1
            if isinstance(module, _ConvTransposeNd):
                n = inputs[0].numel() * (module.out_channels // module.groups) * k
            else:
                n = output.numel() * (module.weight.shape[1] if isinstance(module, _ConvNd)
                                      else module.in_features) * k
            macs[name] = macs.get(name, 0) + n
        return count

    layers = {n: m for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)}
    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        model.eval()
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.train(mode)
    reasons = {n: digital_reason(m) for n, m in layers.items()}
    digital = tuple((n, r, macs.get(n, 0)) for n, r in reasons.items() if r is not None)
    analog = [n for n, r in reasons.items() if r is None]
    return Placement(sum(macs.get(n, 0) for n in analog), digital, len(analog))


def describe_layers(placement: dict | None) -> str:
    """What an analog checkpoint's ``placement`` says a user must know, in lines: what BN
    folding folded and left digital, and the layers kept digital with their share of the
    multiply-accumulates ("" when every layer is analog and nothing was folded)."""
    if not placement:
        return ""
    lines = []
    if placement.get("fold") is not None:
        lines.append(describe_folding(placement["fold"]))
    if placement["layers"]["digital"]:
        lines.append(describe_placement(placement["layers"]))
    return "\n".join(lines)
