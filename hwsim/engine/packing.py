"""A chip's tiles laid out for the fused kernel in two gathers, for the whole model at once.

A fast layer (:mod:`hwsim.engine.fast`) that takes a chip's tiles one by one permutes each
tile's weights into the kernel's (ky, kx, c) input order, folds in the DAC/ADC gain, pads
the columns to :data:`hwsim.engine.kernels.COLS` and lays out its column scales: a dozen
small torch operations per tile, a few milliseconds per chip on a ResNet, which on the
8x8 digits is a large part of a cell. The layout does not change from chip to chip, only
the values do: :class:`ChipPacker` computes once, per engine, where each element of the
chip's flat tile tensor (:class:`hwsim.engine.chips.ChipModel`) and each of its row scales
lands, and then packs a chip with one ``index_select`` for the weights and one for the
scales. The packed tiles are the same numbers as the layers' own packing, bit for bit (the
same products, in the same float32 arithmetic; ``tests/test_packing.py`` compares them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hwsim.engine import kernels
from hwsim.engine.fast import group_tiles
from hwsim.engine.tiles import LayerState


@dataclass
class PackedChip:
    """One chip's packed weights and column scales (flat; :meth:`install` hands out views
    of them), and the packer that laid them out."""

    weights: torch.Tensor
    col_scales: torch.Tensor
    packer: ChipPacker

    def install(self, layers: dict, states: dict[str, LayerState]) -> None:
        """Hand each of ``layers`` (fast layers of the packer's tile structure, by name) its
        packed tiles; ``states``: this chip's layer states."""
        w, cs = self.weights, self.col_scales
        for name, groups in self.packer.layers:
            layers[name].set_packed(states[name], [
                [kernels.PackedTile(w[o:o + k * npad].view(k, npad), cs[r:r + npad], bias, n)
                 for o, k, npad, r, n, bias in tiles] for tiles in groups])


class ChipPacker:
    """Where the tiles of a :class:`~hwsim.engine.chips.ChipModel` land in the fused kernel's
    packed tiles of its fast layers. ``states``: one chip's layer states (by module name;
    only their tile structure and biases are used: the same for every chip of the model);
    ``kernel_sizes``: each layer's conv kernel size, None for a linear layer; ``io``: the
    forward IO (its DAC/ADC steps)."""

    def __init__(self, chip, states: dict[str, LayerState],
                 kernel_sizes: dict[str, tuple[int, int] | None], io) -> None:
        self.gain = (io.inp_step or 1.0) / (io.out_step or 1.0)
        self.out_step = io.out_step or 1.0
        n_weights, n_rows = chip.clean.numel(), chip.n_rows  # the indices of a padding zero
        where, row = {}, 0  # (layer, in0, in1, out0, out1) -> (flat start, first row)
        for name, _, _, _, tiles in chip.layers:
            for i0, i1, o0, o1, start in tiles:
                where[(name, i0, i1, o0, o1)] = (start, row)
                row += o1 - o0
        w_index, r_index = [], []
        self.layers = []  # (name, per group: per tile (w offset, k, npad, cs offset, n_out, bias))
        w_off = r_off = 0
        for name, state in states.items():
            kernel = kernel_sizes[name]
            single = len(state.tiles) == 1
            groups = []
            for a, b, channels, chunk in group_tiles(state.tiles, kernel):
                tiles = []
                for t in chunk:
                    start, row0 = where[(name, a, b, t.out_start, t.out_end)]
                    n_out, n_in = t.out_end - t.out_start, b - a
                    npad = -(-n_out // kernels.COLS) * kernels.COLS
                    # the element of the (out, in) tile block that lands at each (k, column)
                    # of the packed (in, npad) tile: the layer's own permutation (_Group)
                    index = torch.arange(start, start + n_out * n_in).view(n_out, n_in)
                    if channels is not None:
                        kh, kw = kernel
                        index = index.view(n_out, channels[1] - channels[0], kh, kw) \
                            .permute(2, 3, 1, 0).reshape(n_in, n_out)
                    else:
                        index = index.t()
                    packed = torch.full((n_in, npad), n_weights, dtype=torch.long)
                    packed[:, :n_out] = index
                    w_index.append(packed.reshape(-1))
                    rows = torch.full((npad,), n_rows, dtype=torch.long)
                    rows[:n_out] = torch.arange(row0, row0 + n_out)
                    r_index.append(rows)
                    bias = torch.zeros(npad)
                    if single and state.bias is not None:
                        bias[:n_out] = state.bias
                    tiles.append((w_off, n_in, npad, r_off, n_out, bias))
                    w_off += n_in * npad
                    r_off += npad
                groups.append(tiles)
            self.layers.append((name, groups))
        self.w_index = torch.cat(w_index)
        self.r_index = torch.cat(r_index)

    def pack(self, weights: torch.Tensor, row_scales: torch.Tensor) -> PackedChip:
        """The chip with flat tile ``weights`` and per-row digital ``row_scales``
        (:meth:`~hwsim.engine.chips.ChipModel.row_scales`), packed."""
        zero = weights.new_zeros(1)
        w = torch.cat([weights, zero]).index_select(0, self.w_index)
        w.mul_(self.gain)
        cs = torch.cat([row_scales, zero]).index_select(0, self.r_index)
        cs.mul_(self.out_step)
        return PackedChip(w, cs, self)
