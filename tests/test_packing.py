"""A chip packed for the fused kernel at once (:mod:`hwsim.engine.packing`) is the chip
each fast layer packs for itself: the same logits, bit for bit, one chip at a time and
stacked, over the presets' kernel paths (several tiles per layer, tiles that cut through a
conv's channels, column-wise scales, ReRAM, BN, layers without bias)."""

from __future__ import annotations

import pytest
import torch

from hwsim.engine import create_engine
from tests.test_chips import make
from tests.test_stacked import TIMES, _batch, _net, _sequential_logits, _stacked_logits

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    ("pcm", {}),
    ("pcm", {"bn": True}),
    ("pcm", {"mapping.max_input_size": 20, "mapping.max_output_size": 24}),
    ("pcm", {"mapping.max_input_size": 40, "mapping.max_output_size": 8, "bn": True}),
    ("pcm-column", {"bn": True}),
    ("reram", {}),
    ("pcm", {"forward.inp_noise": 0.05}),  # input noise: the eager path, nothing packed
]


def _engines(name, change):
    change = dict(change)
    bn = change.pop("bn", False)
    preset = make(name, change)
    packed = create_engine("fast", _net(bn), preset, torch.device("cpu"))
    plain = create_engine("fast", _net(bn), preset, torch.device("cpu"))
    plain._chip_packer = lambda: None  # every layer packs its own tiles
    return packed, plain


@pytest.mark.parametrize("name,change", CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in c.items())}"
                              for n, c in CASES])
def test_packed_chips_equal_per_layer_packing(name, change, digits):
    x = digits.test_x[:24].float() / 255.0
    packed, plain = _engines(name, change)
    for seed in (3, 11, 12):  # a new chip each: the second and third reuse the layers
        a = _sequential_logits(packed, x, TIMES, seed)
        b = _sequential_logits(plain, x, TIMES, seed)
        for t, ya, yb in zip(TIMES, a, b):
            assert torch.equal(ya, yb), (seed, t, float((ya - yb).abs().max()))
        sa = _stacked_logits(packed, x, TIMES, seed)  # loads after the first take packed tiles
        sb = _stacked_logits(plain, x, TIMES, seed)
        for t, ya, yb in zip(TIMES, sa, sb):
            assert torch.equal(ya, yb), (seed, t, float((ya - yb).abs().max()))
    kernel = packed.io.kernel is not None  # the fused kernel runs this preset
    assert (packed._packer is not None) == kernel and plain._packer is None
    assert (packed.snapshot().packed is not None) == kernel
    assert plain.snapshot().packed is None


def test_packed_tiles_are_the_layers_own(digits):
    """The packer's tiles against the layer's own packing, element for element."""
    from hwsim.engine import kernels
    packed, _ = _engines("pcm", {"mapping.max_input_size": 40, "mapping.max_output_size": 8,
                                 "bn": True})
    packed.program(5)
    packed.model  # noqa: B018  (the first chip: every layer builds its tiles)
    packed.program(6)
    model = packed.model
    layers = [m for m in model.modules() if hasattr(m, "set_packed")]
    assert layers and all(m._stale is not None for m in layers)
    x = _batch(digits.test_x[:2].float() / 255.0)
    with torch.no_grad():
        model(x)  # every tile used once
    for m in layers:
        ours = m._packed
        m._eager_tiles()
        m._packed = None
        ostep = m.io.out_step or 1.0
        single = m._single()
        for g, tiles in zip(m.groups, ours):
            for (o0, o1, w, s), tile in zip(g.tiles, tiles):
                ref = kernels.pack_tile(w, ostep * s.expand(o1 - o0), m.bias if single else None)
                assert torch.equal(tile.weight, ref.weight)
                assert torch.equal(tile.col_scale, ref.col_scale)
                assert torch.equal(tile.bias, ref.bias)
