"""A fast conv absorbing the eval-mode BN it feeds (:func:`hwsim.engine.fast.absorb_batchnorms`)
changes no number: the model's logits, a stacked evaluation, BN recalibration and what hooks
see are those of the same engine with every BN run as torch's own layer, bit for bit; and it
does absorb (the BNs pass the conv's output through), except where it must not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hwsim.analog.recalibrate import recalibrate_bn
from hwsim.engine import create_engine, fast, kernels
from hwsim.models import create_model
from tests.test_chips import make
from tests.test_stacked import _sequential_logits, _stacked_logits

pytestmark = [pytest.mark.skipif(not kernels.available(), reason="no C compiler"),
              pytest.mark.usefixtures("one_thread")]

PRESETS = [
    ("pcm", {}),
    ("pcm", {"forward.noise_management": "max"}),
    ("pcm", {"mapping.max_input_size": 20, "mapping.max_output_size": 24}),  # several tiles
    ("pcm-column", {}),
    ("reram", {}),
]
ARCHS = ["cnn", "resnet20", "vgg11"]


def _net(arch: str) -> nn.Module:
    """A BN model with BN statistics far from identity (an absorbed BN that did nothing, or
    ran twice, would show)."""
    torch.manual_seed(0)
    net = create_model(arch, bn=True, num_classes=10, in_channels=1, input_size=8).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 2 + 0.2)
                m.weight.copy_(torch.randn(m.num_features, generator=gen) * 0.5 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
    return net


class _Count:
    """How many times a BN passed its conv's absorbed output through."""

    def __init__(self, monkeypatch):
        self.n = 0
        original = fast.AbsorbableBatchNorm2d.forward

        def forward(bn, x):
            self.n += bn._absorbed is not None and x is bn._absorbed
            return original(bn, x)

        monkeypatch.setattr(fast.AbsorbableBatchNorm2d, "forward", forward)


def _logits(model, x, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name,change", PRESETS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in c.items())}"
                              for n, c in PRESETS])
def test_absorbing_changes_no_logit(arch, name, change, digits, monkeypatch):
    x = (digits.test_x[:16].float() / 255.0).contiguous(memory_format=torch.channels_last)
    engine = create_engine("fast", _net(arch), make(name, change), torch.device("cpu"))
    engine.program(3)
    count = _Count(monkeypatch)
    absorbed = _logits(engine.model, x, 7)
    n_absorbed = count.n
    monkeypatch.setattr(fast, "ABSORB_BN", False)
    plain = _logits(engine.model, x, 7)
    assert count.n == n_absorbed  # nothing passed through with absorption off
    assert torch.equal(absorbed, plain), float((absorbed - plain).abs().max())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in engine.model.modules())
    # every conv + BN pair of one tile absorbs; layers split over several tiles do not
    single = sum(isinstance(m, fast.FastAnalogConv2d) and bool(m._bn) and m._single()
                 for m in engine.model.modules())
    assert n_absorbed == single <= n_bn
    assert single > 0 or "mapping.max_input_size" in change  # split maps may leave none


def test_absorbing_keeps_the_models_classes_and_state(digits):
    net = _net("resnet20")
    engine = create_engine("fast", net, make("pcm", {}), torch.device("cpu"))
    engine.program(0)
    assert all(type(m) is nn.BatchNorm2d for m in net.modules()
               if isinstance(m, nn.BatchNorm2d))  # the digital model is untouched
    bns = [m for m in engine.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(type(m) is fast.AbsorbableBatchNorm2d for m in bns)
    digital_keys = set(net.state_dict())
    assert {k for k in engine.model.state_dict() if "running" in k or "bn" in k} <= digital_keys


@pytest.mark.parametrize("path", ["kernel", "eager"])
def test_stacked_chips_absorb_and_equal_one_at_a_time_unabsorbed(path, digits, monkeypatch):
    if path == "eager":
        monkeypatch.setattr(kernels, "available", lambda: False)
    x = digits.test_x[:12].float() / 255.0
    times = [1.0, 86400.0]
    engine = create_engine("fast", _net("resnet20"), make("pcm", {}), torch.device("cpu"))
    count = _Count(monkeypatch)
    stacked = _stacked_logits(engine, x, times, 5)
    assert (count.n > 0) == (path == "kernel")
    monkeypatch.setattr(fast, "ABSORB_BN", False)
    one = _sequential_logits(engine, x, times, 5)
    for a, b in zip(stacked, one):
        assert torch.equal(a, b)


def test_recalibration_and_hooks_see_the_unabsorbed_model(digits, monkeypatch):
    """Recalibration runs the BNs in training mode, hooks watch a BN's input or a conv's
    output: none of them is absorbed then, and they see what they would without absorption."""
    x = (digits.test_x[:16].float() / 255.0).contiguous(memory_format=torch.channels_last)
    calib = digits.train_x[:40].float()
    results = {}
    for absorb in (True, False):
        monkeypatch.setattr(fast, "ABSORB_BN", absorb)
        engine = create_engine("fast", _net("resnet20"), make("pcm", {}), torch.device("cpu"))
        engine.program(2)
        model = engine.model
        recalibrate_bn(model, calib, digits.normalization, batch_size=20, device="cpu", seed=9)
        stats = [b.clone() for n, b in model.named_buffers() if "running" in n]
        seen = {}
        bn_name, conv_name = "blocks.0.branch.1", "blocks.0.branch.3"
        handles = [model.get_submodule(bn_name).register_forward_pre_hook(
                       lambda m, i, seen=seen: seen.__setitem__("bn_in", i[0].clone())),
                   model.get_submodule(conv_name).register_forward_hook(
                       lambda m, i, o, seen=seen: seen.__setitem__("conv_out", o.clone()))]
        hooked = _logits(model, x, 4)
        for h in handles:
            h.remove()
        results[absorb] = (stats, seen, hooked, _logits(model, x, 4))
    (s1, seen1, h1, l1), (s0, seen0, h0, l0) = results[True], results[False]
    assert all(torch.equal(a, b) for a, b in zip(s1, s0))
    assert torch.equal(seen1["bn_in"], seen0["bn_in"])
    assert torch.equal(seen1["conv_out"], seen0["conv_out"])
    assert torch.equal(h1, h0) and torch.equal(l1, l0)


def test_all_zero_input_still_gets_its_bn(monkeypatch):
    """A layer whose every input vector is zero outputs its bias alone (no kernel write):
    the absorbed BN is still applied."""
    engine = create_engine("fast", _net("cnn"), make("pcm", {}), torch.device("cpu"))
    engine.program(1)
    x = torch.zeros(3, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    count = _Count(monkeypatch)
    absorbed = _logits(engine.model, x, 2)
    assert count.n > 0
    monkeypatch.setattr(fast, "ABSORB_BN", False)
    assert torch.equal(absorbed, _logits(engine.model, x, 2))


class _SharedOutput(nn.Module):
    """A conv whose output feeds its BN and the residual sum: not absorbable."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 64, 3)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y) + y
        return self.fc(torch.flatten(self.bn2(self.conv2(z)), 1))


def test_a_conv_output_used_elsewhere_is_not_absorbed(monkeypatch):
    torch.manual_seed(0)
    net = _SharedOutput().eval()
    with torch.no_grad():
        net.bn.running_mean.fill_(0.5)
        net.bn2.running_var.fill_(3.0)
    engine = create_engine("fast", net, make("pcm", {}), torch.device("cpu"))
    engine.program(0)
    model = engine.model
    assert type(model.bn) is nn.BatchNorm2d and type(model.bn2) is fast.AbsorbableBatchNorm2d
    x = torch.rand(5, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    count = _Count(monkeypatch)
    absorbed = _logits(model, x, 3)
    assert count.n == 1
    monkeypatch.setattr(fast, "ABSORB_BN", False)
    assert torch.equal(absorbed, _logits(model, x, 3))


def test_a_bn_whose_conv_absorbed_it_refuses_another_tensor():
    """Had the conv's absorbed output not reached its BN unchanged (something the graph did
    not show), the BN would be applied twice or not at all: it raises instead."""
    engine = create_engine("fast", _net("cnn"), make("pcm", {}), torch.device("cpu"))
    engine.program(0)
    conv, bn = engine.model[0], engine.model[1]
    assert type(bn) is fast.AbsorbableBatchNorm2d
    x = torch.rand(2, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = conv(x)
        with pytest.raises(RuntimeError, match="already applied it"):
            bn(y.clone())
        # then an unabsorbed call normalises as usual
        assert torch.equal(bn(y), nn.BatchNorm2d.forward(bn, y))
        z = conv(x)
        assert bn(z) is z
