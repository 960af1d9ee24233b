"""The fast engine's tile layout, computed without aihwkit (hwsim.engine.tiles.tile_layout),
against aihwkit's own conversion (convert_to_analog, then the tiles read back): the same
layers in the same order, the same tile boundaries and the same digital biases, over
generated models (nesting, excluded and subclassed layers, a converted root) and tile sizes
on both sides of every layer's size."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from hwsim.analog.presets import DevicePreset, MappingSpec, load_preset
from hwsim.engine.aihwkit_engine import AihwkitEngine
from hwsim.engine.tiles import read_layers, split_sizes, tile_layout
from hwsim.models import create_model


class _Linear(nn.Linear):  # a subclass: aihwkit converts exact classes only
    pass


def _random_model(rng: random.Random) -> tuple[nn.Module, list[str]]:
    """A nested model of convs and linears (some without bias, one subclassed, one grouped)
    and the names to exclude from the conversion."""
    def conv(c_in):
        c_out = rng.choice([1, 3, 7, 16, 33])
        k = rng.choice([1, 2, 3, 5])
        return nn.Conv2d(c_in, c_out, k, bias=rng.random() < 0.5), c_out

    blocks, c = [], rng.choice([1, 3, 4])
    for _ in range(rng.randint(1, 4)):
        inner = []
        for _ in range(rng.randint(1, 3)):
            layer, c = conv(c)
            inner.append(layer)
            if rng.random() < 0.3:
                inner.append(nn.BatchNorm2d(c))
        blocks.append(nn.Sequential(*inner) if rng.random() < 0.6 else inner[0])
    head = nn.Sequential(nn.Flatten(), nn.Linear(c, rng.choice([2, 10, 65]),
                                                 bias=rng.random() < 0.7))
    model = nn.Sequential(*blocks, nn.ReLU(), head)
    model.extra = _Linear(5, 4)
    model.grouped = nn.Conv2d(4, 4, 3, groups=2)
    exclude = ["grouped"]
    names = [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)
             and n != "grouped"]
    if rng.random() < 0.5:  # a layer or a whole container kept digital
        exclude.append(rng.choice(names))
    if rng.random() < 0.3:
        exclude.append("0")
    return model, exclude


def _boundaries(layout):
    return {name: ([(t.in_start, t.in_end, t.out_start, t.out_end) for t in state.tiles],
                   state.out_size, state.in_size) for name, state in layout.items()}


def _check_same(model, preset, exclude):
    from aihwkit.nn.conversion import convert_to_analog

    engine = AihwkitEngine(model, preset, torch.device("cpu"))
    exclude = list(exclude) + list(engine.digital_layers)
    reference = read_layers(convert_to_analog(model, engine.rpu_config, exclude_modules=exclude))
    mapping = preset.mapping
    ours = tile_layout(model, mapping.max_input_size, mapping.max_output_size, exclude)
    assert list(ours) == list(reference)
    assert _boundaries(ours) == _boundaries(reference)
    for name, state in ours.items():
        ref = reference[name].bias
        assert (state.bias is None) == (ref is None), name
        if ref is not None:
            assert torch.equal(state.bias, ref), name
        # the clean tiles put together are the layer's weight
        w = dict(model.named_modules())[name].weight.detach()
        assert torch.equal(state.effective_weight(), w.reshape(w.shape[0], -1))


def _preset(max_in: int, max_out: int) -> DevicePreset:
    from dataclasses import replace

    base = load_preset("gaussian")
    return replace(base, mapping=MappingSpec(max_input_size=max_in, max_output_size=max_out))


@pytest.mark.parametrize("case", range(24))
def test_layout_matches_aihwkit_on_generated_models(case):
    rng = random.Random(case)
    torch.manual_seed(case)
    model, exclude = _random_model(rng)
    sizes = [1, 2, 3, 7, 16, 27, 33, 64, 144, 512]
    _check_same(model, _preset(rng.choice(sizes), rng.choice(sizes)), exclude)


@pytest.mark.parametrize("arch", ["cnn", "resnet20", "vgg11"])
@pytest.mark.parametrize("tiles", [(512, 512), (64, 32), (27, 16)])
def test_layout_matches_aihwkit_on_shipped_architectures(arch, tiles):
    torch.manual_seed(0)
    model = create_model(arch, bn=True, num_classes=10, in_channels=1, input_size=28)
    _check_same(model.eval(), _preset(*tiles), [])


def test_a_converted_root_is_named_as_aihwkit_names_it():
    _check_same(nn.Linear(40, 30), _preset(16, 7), [])


def test_split_sizes_is_aihwkits():
    from aihwkit.simulator.tiles.array import TileModuleArray

    for size in range(1, 70):
        for max_size in range(0, 72):
            # an instance method that does not use its instance
            assert split_sizes(size, max_size) == TileModuleArray.get_split_sizes(
                None, size, max_size), (size, max_size)
