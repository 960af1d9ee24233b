"""The weight layers of a model, and making some of them exact on a programmed chip.

A layer is made exact by putting the digital model's module at the same qualified name in
place of the chip's (aihwkit's ``AnalogConv2d``, the fast engine's layers, or a conv with the
chip's effective weights): it works with every engine, and the chip itself stays programmed,
so the per-layer runs of one chip share its draws.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerInfo:
    """One weight layer: where it sits, its weight shape and share of the weights, and the
    BN layer that normalises its output ("" when none; "folded" when BN was folded in)."""

    name: str
    depth: int  # position among the weight layers, in forward order (0 = first)
    kind: str  # conv or linear
    shape: tuple[int, ...]
    params: int
    share: float  # of all conv/linear weights
    bn: str

    def to_dict(self) -> dict:
        return {"name": self.name, "depth": self.depth, "kind": self.kind,
                "shape": list(self.shape), "params": self.params, "share": self.share,
                "bn": self.bn}

    @classmethod
    def from_dict(cls, d: dict) -> LayerInfo:
        return cls(d["name"], d["depth"], d["kind"], tuple(d["shape"]), d["params"], d["share"],
                   d["bn"])


def forward_order(model: nn.Module, sample: torch.Tensor, kinds) -> list[str]:
    """Qualified names of the modules of ``kinds`` in the order one forward calls them."""
    order: list[str] = []
    handles = [m.register_forward_hook(lambda *_, n=n: order.append(n))
               for n, m in model.named_modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        for h in handles:
            h.remove()
    seen: set[str] = set()
    return [n for n in order if not (n in seen or seen.add(n))]


def layer_inventory(digital: nn.Module, unfolded: nn.Module, sample: torch.Tensor,
                    folded: bool) -> list[LayerInfo]:
    """The weight layers of ``digital`` (the model the chip was built from) in forward order.

    ``unfolded`` is the trained model before any BN folding (the same names; not run): its
    BN layers name each layer's neighbour (the BN directly after it in its ``nn.Sequential``).
    ``sample`` is a batch on ``digital``'s device.
    """
    order = forward_order(digital, sample, WEIGHT_LAYERS)
    modules = dict(digital.named_modules())
    total = sum(modules[n].weight.numel() for n in order)
    neighbour = bn_neighbours(unfolded)
    out = []
    for i, name in enumerate(order):
        m = modules[name]
        bn = neighbour.get(name, "")
        out.append(LayerInfo(name, i, "conv" if isinstance(m, nn.Conv2d) else "linear",
                             tuple(m.weight.shape), m.weight.numel(), m.weight.numel() / total,
                             f"folded ({bn})" if bn and folded else bn))
    return out


def bn_neighbours(model: nn.Module) -> dict[str, str]:
    """{weight layer: the BN layer directly after it in the same ``nn.Sequential``}."""
    out = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(1, len(module)):
            if isinstance(module[i], nn.modules.batchnorm._BatchNorm) and \
                    isinstance(module[i - 1], WEIGHT_LAYERS):
                join = f"{prefix}." if prefix else ""
                out[f"{join}{i - 1}"] = f"{join}{i}"
    return out


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential) and child.isdigit():
        parent[int(child)] = module
    else:
        setattr(parent, child, module)


@contextlib.contextmanager
def exact_layers(chip_model: nn.Module, digital: nn.Module,
                 names: Iterable[str]) -> Iterator[nn.Module]:
    """``chip_model`` with the layers ``names`` replaced by ``digital``'s (exact) ones; the
    chip's own modules are put back on exit, untouched."""
    names = list(names)
    saved = {n: chip_model.get_submodule(n) for n in names}
    try:
        for n in names:
            _set_module(chip_model, n, digital.get_submodule(n))
        yield chip_model
    finally:
        for n, m in saved.items():
            _set_module(chip_model, n, m)
