"""Hardware-aware (noise-injection) training, as aihwkit's HWA does it (Rasch et al., Nature
Communications 2023), on ordinary digital layers.

* Weight noise: every training forward sees each analog layer's weight (every conv/linear
  the tiles hold, whatever the nesting; not the layers kept digital) plus fresh zero-mean
  Gaussian noise of std ``eta * max|W|``, ``max|W|`` being that layer's current abs-max:
  aihwkit's ``WeightModifierType.ADD_NORMAL`` with ``rel_to_actual_wmax=True`` (its torch
  tile, ``modify_weight``: ``w + std_dev * w.abs().max() * randn``). The noise is a constant
  of the step, so the gradient computed at the noisy weights updates the clean ones. aihwkit
  takes the abs-max per tile; hwsim per layer (a layer is one tile up to 512 inputs).
* Clipping: after every optimiser step each layer's weights are clipped to
  ``+-k * std(W)``: aihwkit's ``WeightClipType.LAYER_GAUSSIAN`` (its torch tile,
  ``clip_weights``: ``alpha = weight.std() * sigma``), again per layer instead of per tile.
* Fine-tuning: training may start from an existing checkpoint (aihwkit's tutorial fine-tunes a
  trained model with HWA).

Nothing here runs in eval mode: evaluation always sees the clean weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from hwsim.analog.placement import analog_layers
from hwsim.checkpoint import Checkpoint, load_checkpoint
from hwsim.errors import CheckpointError


def analog_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights that an analog chip would hold, by parameter name: every analog layer
    whatever its nesting; not the layers kept digital (:mod:`hwsim.analog.placement`)."""
    return {f"{name}.weight" if name else "weight": m.weight
            for name, m in analog_layers(model).items()}


def noisy_forward(model: nn.Module, eta: float,
                  generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model``'s forward with fresh weight noise of std ``eta * max|W|`` per layer on every
    call, drawn from ``generator``; ``model`` itself when ``eta`` is 0 (nothing is drawn).

    The model's parameters are not modified: the noisy weights exist only during the call.
    """
    if eta == 0:
        return model
    weights = analog_weights(model)

    def forward(x: torch.Tensor) -> torch.Tensor:
        noisy = {}
        for name, w in weights.items():
            with torch.no_grad():
                noise = torch.randn(w.shape, generator=generator, device=w.device,
                                    dtype=w.dtype).mul_(eta * w.abs().max())
            noisy[name] = w + noise  # d(noisy)/dw = 1: the gradient reaches the clean weight
        return functional_call(model, noisy, (x,))

    return forward


@torch.no_grad()
def clip_weights(model: nn.Module, k: float | None) -> None:
    """Clip each analog layer's weights to ``+-k * std(W)`` in place (None: no-op)."""
    if k is None:
        return
    for w in analog_weights(model).values():
        bound = float(w.std()) * k
        w.clamp_(-bound, bound)


def load_init(path: str | Path, arch: str, bn: bool, dataset: str) -> Checkpoint:
    """The digital checkpoint at ``path`` to fine-tune from, if it fits the run.

    Raises:
        CheckpointError: unreadable, analog, or another architecture, BN choice or dataset.
    """
    ckpt = load_checkpoint(path)
    if ckpt.kind != "digital":
        raise CheckpointError(f"--init {path}: an analog checkpoint; give the digital "
                              "checkpoint it was converted from")
    if (ckpt.arch, ckpt.bn, ckpt.dataset) != (arch, bn, dataset):
        raise CheckpointError(f"--init {path} is {_describe(ckpt.arch, ckpt.bn, ckpt.dataset)}, "
                              f"but this run trains {_describe(arch, bn, dataset)}")
    return ckpt


def _describe(arch: str, bn: bool, dataset: str) -> str:
    return f"{arch} {'with' if bn else 'without'} BN on {dataset}"
