"""BN folding on any graph: every torchvision classification builder, and the cases a graph
can show (BN after an addition, a shared conv output, Linear -> BatchNorm1d, nesting)."""

import os
import time

import pytest
import torch
import torchvision
from fixtures.user_cnn import build as build_user_cnn
from torch import nn

from hwsim.analog.bn import fold_batchnorm, fold_bn
from hwsim.errors import ConfigError

BUILDERS = torchvision.models.list_models(module=torchvision.models)
# The smallest input each builder takes (32x32 unless listed); builder arguments that make
# an input that small possible.
INPUT = {"alexnet": 63, "inception_v3": 75, "maxvit_t": 224, "vit_h_14": 28}
KWARGS = {n: {"image_size": INPUT.get(n, 32)} for n in BUILDERS if n.startswith("vit_")}
# Build + fold + forwards, measured here on one thread (the README lists the times): the
# builders over ~0.8 s are skipped unless HWSIM_ALL_BUILDERS=1, but for a bottleneck
# ResNet, which runs (marked slow). VGG-BN's pattern is hwsim's own vgg (tests/test_bn.py);
# MaxViT's conv output used twice is _Shapes' below.
SLOW = {"resnet50"}
EXPENSIVE = {"maxvit_t", "vgg11_bn",
    "efficientnet_b4", "efficientnet_b5", "regnet_x_8gf", "regnet_x_16gf", "wide_resnet50_2",
    "convnext_base", "convnext_large", "convnext_small", "densenet161", "densenet201",
    "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l", "efficientnet_v2_m",
    "regnet_x_32gf", "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf",
    "regnet_y_8gf", "resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "swin_b",
    "swin_s", "swin_v2_b", "swin_v2_s", "vgg11", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
    "vgg19", "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32",
    "wide_resnet101_2"}
ALL = os.environ.get("HWSIM_ALL_BUILDERS") == "1"


def _param(name):
    marks = []
    if name in SLOW:
        marks.append(pytest.mark.slow)
    if name in EXPENSIVE:
        marks += [pytest.mark.slow, pytest.mark.skipif(
            not ALL, reason="over ~0.8 s to build; HWSIM_ALL_BUILDERS=1 runs it")]
    return pytest.param(name, marks=marks, id=name)


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine terms (a fresh BN folds to the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                    m.bias.copy_(0.2 * torch.randn(n, generator=gen))


def _bn_names(model):
    return {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def _assert_same_function(model, folded, x):
    with torch.no_grad():
        ref, out = model(x), folded(x)
    if isinstance(ref, tuple):  # googlenet/inception in eval return tensors; be safe
        ref, out = ref[0], out[0]
    scale = float(ref.abs().max())  # 0 for a zero-initialised head (ViT): then equal
    assert torch.isfinite(ref).all()
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * scale), float((out - ref).abs().max())


@pytest.mark.parametrize("name", [_param(n) for n in BUILDERS])
def test_folding_every_torchvision_builder_keeps_its_function(name, one_thread):
    start = time.perf_counter()
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10,
                                         **KWARGS.get(name, {})).eval()
    randomize_bn(model)
    bns = _bn_names(model)
    result = fold_batchnorm(model)
    # every BN is accounted for: folded (gone) or left digital (still a BN, with a reason)
    assert {b for b, _ in result.folded} | {b for b, _ in result.kept} == bns
    assert _bn_names(result.model) == {b for b, _ in result.kept}
    assert all(why for _, why in result.kept)
    assert _bn_names(model) == bns  # the input model is not modified
    size = INPUT.get(name, 32)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    _assert_same_function(model, result.model, x)
    # the folded structure is rebuilt from a fresh model, as a checkpoint is: same keys and
    # shapes (strict loading into a model on torch's meta device, as check_weights does)
    def build():
        return torchvision.models.get_model(name, weights=None, num_classes=10,
                                            **KWARGS.get(name, {}))

    try:
        with torch.device("meta"):
            fresh = fold_bn(build())
    except NotImplementedError:  # RegNet computes its widths with tensors: no meta build
        fresh = fold_bn(build())
    fresh.load_state_dict(result.model.state_dict(), strict=True, assign=True)
    print(f"{name}: {time.perf_counter() - start:.2f} s, {result.summary()}")


def test_a_bn_after_an_addition_stays_digital_and_is_reported():
    model = build_user_cnn(num_classes=10, in_channels=1, input_size=16, bn=True).eval()
    randomize_bn(model)
    result = fold_batchnorm(model)
    assert result.kept == (("post_bn", "follows an addition"),)
    assert len(result.folded) == len(_bn_names(model)) - 1
    assert result.kept_share == pytest.approx(1 / len(_bn_names(model)))
    assert "post_bn (follows an addition)" in result.summary()
    _assert_same_function(model, result.model, torch.randn(4, 1, 16, 16))


class _Shapes(nn.Module):
    """A conv whose output feeds its BN and a skip (not foldable), a conv called twice,
    a pre-activation BN, and Linear -> BatchNorm1d inside a nested ModuleDict."""

    def __init__(self):
        super().__init__()
        self.pre = nn.BatchNorm2d(3)
        self.shared = nn.Conv2d(3, 3, 3, padding=1)
        self.shared_bn = nn.BatchNorm2d(3)
        self.twice = nn.Conv2d(3, 3, 1)
        self.twice_bn = nn.BatchNorm2d(3)
        self.head = nn.ModuleDict({"fc": nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8)),
                                   "out": nn.Linear(8, 4)})

    def forward(self, x):
        x = self.pre(x)
        y = self.shared(x)
        x = self.shared_bn(y) + y
        x = self.twice_bn(self.twice(self.twice(x)))
        x = nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return self.head["out"](self.head["fc"](x))


def test_what_the_graph_shows_decides_what_folds():
    model = _Shapes().eval()
    randomize_bn(model)
    result = fold_batchnorm(model)
    assert result.folded == (("head.fc.1", "head.fc.0"),)
    kept = dict(result.kept)
    assert kept["pre"] == "follows the model input"
    assert kept["shared_bn"] == "the output of 'shared' is also used elsewhere"
    assert kept["twice_bn"] == "'twice' is called more than once"
    assert result.kept_share == pytest.approx(3 / 4)
    assert isinstance(result.model.head["fc"][1], nn.Identity)
    _assert_same_function(model, result.model, torch.randn(4, 3, 8, 8))


def test_a_model_without_bn_is_returned_unchanged():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    result = fold_batchnorm(model)
    assert result.folded == result.kept == () and result.kept_share == 0.0
    assert result.summary() == "BN fold: 0 of 0 BatchNorm layers folded"


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_a_model_that_cannot_be_traced_is_one_error_line():
    with pytest.raises(ConfigError) as e:
        fold_batchnorm(_Untraceable())
    assert "\n" not in str(e.value) and "cannot be traced by torch.fx" in str(e.value)
