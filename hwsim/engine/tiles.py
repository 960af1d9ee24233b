"""Reading programmed, drifted tiles out of an aihwkit model.

aihwkit computes a tile's output as ``mvm(x, W_tile)`` (with the forward IO non-idealities),
then multiplies it digitally by the tile's mapping scales, learned out-scales and drift-
compensation factor ``alpha``, and adds the digital bias once per layer. A layer larger
than ``max_input_size`` x ``max_output_size`` is a ``TileModuleArray``: equal input chunks
whose outputs are summed, equal output chunks concatenated.

:func:`tile_layout` computes the same tiles from the clean model without aihwkit (which layers
its ``convert_to_analog`` converts, and how ``TileModuleArray`` splits them): what the fast
engine's chips are laid out on. ``tests/test_tile_layout.py`` checks it against aihwkit's
conversion over generated models and tile sizes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
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


# aihwkit's _DEFAULT_CONVERSION_MAP: the classes convert_to_analog replaces (exact class, so a
# subclass stays as it is)
_CONVERTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def split_sizes(size: int, max_size: int) -> list[int]:
    """aihwkit's ``TileModuleArray.get_split_sizes``: ``size`` in as few chunks of at most
    ``max_size`` as possible, the first ones one larger where it does not divide evenly."""
    if max_size <= 0:
        return [size]
    n = -(-size // max_size)
    base, extra = divmod(size, n)
    return [base + (i < extra) for i in range(n)]


def _converted(module: nn.Module, prefix: str, exclude: Collection[str]) -> Iterator[str]:
    """The names of the layers ``convert_to_analog(module, exclude_modules=exclude)`` makes
    analog, in the order of the analog model's ``named_modules``: its traversal, which tests
    the root itself, skips an excluded child with everything under it, recurses into a child
    that has children and replaces a leaf of a converted class."""
    if type(module) in _CONVERTED and prefix not in exclude:
        yield prefix
        return
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if full in exclude:
            continue
        if next(child.children(), None) is not None:
            yield from _converted(child, full, exclude)
        elif type(child) in _CONVERTED:
            yield full


@torch.no_grad()
def tile_layout(model: nn.Module, max_input_size: int, max_output_size: int,
                exclude: Collection[str] = ()) -> dict[str, LayerState]:
    """The clean tiles of every layer aihwkit would make analog, by module name: the tiles'
    boundaries and digital biases of :func:`read_layers` on ``convert_to_analog(model)`` (tile
    weights: the clean, unmapped blocks; scales: 1), computed without aihwkit or a model copy.
    ``exclude``: the layers kept digital (``exclude_modules``)."""
    modules = dict(model.named_modules(remove_duplicate=False))
    layout = {}
    for name in _converted(model, "", set(exclude)):
        layer = modules[name]
        w = layer.weight.detach().float().cpu()
        w = w.reshape(w.shape[0], -1)
        out_size, in_size = w.shape
        tiles, in_start = [], 0
        for n_in in split_sizes(in_size, max_input_size):
            out_start = 0
            for n_out in split_sizes(out_size, max_output_size):
                tiles.append(TileState(in_start, in_start + n_in, out_start, out_start + n_out,
                                       w[out_start:out_start + n_out, in_start:in_start + n_in],
                                       torch.ones(n_out)))
                out_start += n_out
            in_start += n_in
        bias = None if layer.bias is None else layer.bias.detach().float().cpu().clone()
        layout[name] = LayerState(tiles, bias, out_size, in_size)
    return layout
