"""Reading programmed, drifted tiles out of an aihwkit model.

aihwkit computes a tile's output as ``mvm(x, W_tile)`` (with the forward IO non-idealities),
then multiplies it digitally by the tile's mapping scales, learned out-scales and drift-
compensation factor ``alpha``, and adds the digital bias once per layer. A layer larger
than ``max_input_size`` x ``max_output_size`` is a ``TileModuleArray``: equal input chunks
whose outputs are summed, equal output chunks concatenated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TileState:
    """One tile of a layer: its block of the (out, in) weight matrix and output scale."""

    in_start: int
    in_end: int
    out_start: int
    out_end: int
    weight: torch.Tensor  # (out, in) raw tile weights, as programmed and drifted
    scale: torch.Tensor  # (out,) digital factor after the MVM: mapping * out-scaling * alpha


@dataclass
class LayerState:
    """The tiles and digital bias of one analog conv/linear layer."""

    tiles: list[TileState]
    bias: torch.Tensor | None
    out_size: int
    in_size: int

    def effective_weight(self) -> torch.Tensor:
        """The (out, in) weight an exact MVM would use: tile weights times their scales."""
        w = torch.zeros(self.out_size, self.in_size, dtype=self.tiles[0].weight.dtype,
                        device=self.tiles[0].weight.device)
        for t in self.tiles:
            w[t.out_start:t.out_end, t.in_start:t.in_end] = t.weight * t.scale[:, None]
        return w


def _tile_scale(tile, out_size: int) -> torch.Tensor:
    scale = torch.ones(out_size, dtype=torch.float32)
    scales = tile.get_scales()
    if scales is not None:
        scale = scale * scales.detach().float().cpu().flatten()
    # drift compensation: aihwkit multiplies outputs by alpha in eval mode only
    if getattr(tile.rpu_config, "drift_compensation", None) is not None:
        scale = scale * torch.as_tensor(tile.alpha).detach().float().cpu().flatten()
    return scale


@torch.no_grad()
def read_layer(analog_layer: nn.Module) -> LayerState:
    """The current tiles of an aihwkit AnalogConv2d / AnalogLinear."""
    module = analog_layer.analog_module
    if hasattr(module, "array"):
        in_sizes, out_sizes = list(module.in_sizes), list(module.out_sizes)
        grid = [list(row) for row in module.array]
        bias = module.bias
    else:
        in_sizes, out_sizes = [module.in_size], [module.out_size]
        grid = [[module]]
        bias = module.bias if getattr(module, "digital_bias", False) else None
    tiles = []
    in_start = 0
    for in_size, row in zip(in_sizes, grid):
        out_start = 0
        for out_size, tile in zip(out_sizes, row):
            weight = tile.tile.get_weights().detach().float().cpu()
            tiles.append(TileState(in_start, in_start + in_size, out_start, out_start + out_size,
                                   weight, _tile_scale(tile, out_size)))
            out_start += out_size
        in_start += in_size
    return LayerState(tiles, None if bias is None else bias.detach().float().cpu().clone(),
                      sum(out_sizes), sum(in_sizes))


def read_layers(analog_model: nn.Module) -> dict[str, LayerState]:
    """Every analog layer of ``analog_model`` by module name."""
    return {name: read_layer(m) for name, m in analog_model.named_modules()
            if hasattr(m, "analog_module")}
