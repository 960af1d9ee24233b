"""The fast engine against aihwkit's own tiles (the reference), on whole networks.

tests/test_engine_fields.py compares them layer by layer over every preset field.
"""

import dataclasses

import pytest
import torch
from scipy.stats import ttest_ind
from torch import nn

from hwsim.analog.presets import load_preset
from hwsim.checkpoint import load_checkpoint
from hwsim.engine import DEFAULT_ENGINE, create_engine, kernels
from hwsim.inference.analog import to_analog
from hwsim.inference.montecarlo import InferSettings, run_inference

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors


@pytest.fixture(params=["kernel", "eager"])
def path(request, monkeypatch):
    """Both CPU paths of the fast engine: the fused kernel and the eager torch path (what
    runs where no C compiler exists)."""
    if request.param == "eager":
        monkeypatch.setattr(kernels, "available", lambda: False)
    elif not kernels.available():
        pytest.skip("no C compiler: the fused kernel is unavailable")
    return request.param


def small_net():
    """A conv net whose layers cover: 3x3 conv, strided 1x1 conv, linear; with bias."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 24, 3, padding=1), nn.ReLU(),
        nn.Conv2d(24, 40, 3, padding=1), nn.ReLU(),  # 216 inputs: several tiles below
        nn.Conv2d(40, 16, 1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 30), nn.ReLU(), nn.Linear(30, 10),
    ).eval()
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.05)
            nn.init.normal_(m.bias, std=0.05)
    return net


def preset(name="pcm", mapping=None, **forward):
    p = load_preset(name)
    p = dataclasses.replace(p, forward=dataclasses.replace(p.forward, **forward))
    if mapping:
        p = dataclasses.replace(p, mapping=dataclasses.replace(p.mapping, **mapping))
    return p


def engine_on_reference_chips(engine, net, p):
    """An engine; the fast one programs aihwkit's chips (the same weights, draw for draw),
    so that outputs compare the forward alone."""
    e = create_engine(engine, net, p, torch.device("cpu"))
    return e.use_reference_chips() if engine == "fast" else e


def outputs(p, x, net=None):
    net = net or small_net()
    out = []
    for engine in ("aihwkit", "fast"):
        e = engine_on_reference_chips(engine, net, p)
        e.program(11)
        if p.time_dependent:
            e.drift(86400.0, 12)
        with torch.no_grad():
            out.append(e.model(x))
    return out


# max_input_size 100 splits the 216-input conv into 3 tiles that cut through channels'
# 3x3 blocks (72 each: 8 channels) - and the 256-input linear into 3 uneven tiles;
# max_input_size 54 gives tiles of whole channels (6 x 9); max_output_size 16 splits outputs.
TILINGS = {
    "one-tile": None,
    "input-split-whole-channels": {"max_input_size": 54},
    "input-split-mid-channel": {"max_input_size": 100},
    "input-and-output-split": {"max_input_size": 100, "max_output_size": 16},
}


SCALINGS = {"per-tile": False, "per-column": True}


def mapping(tiling, scaling):
    return {**(TILINGS[tiling] or {}), "weight_scaling_columnwise": SCALINGS[scaling]}


@pytest.mark.parametrize("scaling", list(SCALINGS))
@pytest.mark.parametrize("tiling", list(TILINGS))
def test_without_quantisation_and_noise_outputs_agree_to_float_tolerance(tiling, scaling,
                                                                         path):
    # noise and bound management, tiles, scales, drift compensation all active
    p = preset(out_noise=0.0, inp_res=0.0, out_res=0.0, mapping=mapping(tiling, scaling))
    ref, fast = outputs(p, torch.randn(6, 3, 8, 8))
    assert torch.allclose(fast, ref, rtol=1e-5, atol=1e-5 * ref.abs().max())


@pytest.mark.parametrize("scaling", list(SCALINGS))
@pytest.mark.parametrize("tiling", list(TILINGS))
def test_with_quantisation_outputs_agree_up_to_rare_rounding_ties(tiling, scaling, path):
    # Same arithmetic, different float summation order: a value at a quantisation boundary
    # may round to the neighbouring level, nothing more.
    p = preset(out_noise=0.0, mapping=mapping(tiling, scaling))
    net = nn.Sequential(*list(small_net())[:5])  # the two 3x3 convs and the 1x1 conv
    ref, fast = outputs(p, torch.randn(6, 3, 8, 8), net)
    close = torch.isclose(fast, ref, rtol=1e-5, atol=1e-6 * ref.abs().max())
    assert close.float().mean() > 0.99


def test_bound_management_engages_and_agrees(path):
    # a tiny output bound forces aihwkit's iterative bound management to rescale inputs
    p = preset(out_noise=0.0, inp_res=0.0, out_res=0.0, out_bound=0.5)
    ref, fast = outputs(p, torch.randn(6, 3, 8, 8))
    assert torch.allclose(fast, ref, rtol=1e-5, atol=1e-5 * ref.abs().max())
    unbounded, _ = outputs(preset(out_noise=0.0, inp_res=0.0, out_res=0.0, out_bound=0.5,
                                  bound_management="none"), torch.randn(6, 3, 8, 8))
    assert not torch.allclose(unbounded, ref)


def test_all_zero_input_gives_the_bias_alone(path):
    p = preset()  # with output noise: aihwkit skips the MVM (and its noise) for zero input
    ref, fast = outputs(p, torch.zeros(2, 3, 8, 8), nn.Sequential(*list(small_net())[:1]))
    bias = small_net()[0].bias.view(1, -1, 1, 1).expand_as(ref)
    assert torch.equal(ref, bias) and torch.equal(fast, bias)


@pytest.mark.parametrize("name", ["gaussian", "pcm-weights-only", "ideal"])
def test_weight_only_presets_run_native_layers(name):
    e = create_engine("fast", small_net(), load_preset(name), torch.device("cpu"))
    e.program(3)
    kinds = {type(m) for m in e.model.modules()}
    assert nn.Conv2d in kinds and nn.Linear in kinds  # no analog modules left: digital cost
    ref, fast = outputs(load_preset(name), torch.randn(4, 3, 8, 8))
    assert torch.allclose(fast, ref, rtol=1e-5, atol=1e-5 * ref.abs().max())


# per-column weight scaling: the pcm-column preset, and pcm-weights-only's chips mapped so
VARIANTS = {name: (name, None) for name in ("pcm", "pcm-column", "reram", "ideal",
                                            "pcm-weights-only")}
VARIANTS["pcm-weights-only-per-column"] = ("pcm-weights-only",
                                           {"weight_scaling_columnwise": True})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_accuracy_distribution_matches_aihwkit(variant, cnn_bn_digits, digits):
    """Each engine programs its own chips (hwsim's tensors vs aihwkit's tiles: independent
    draws of the same distribution), 10 repeats: at each time, Welch's t-test of the two
    engines' accuracies does not reject equal means at alpha = 0.01 (tests/test_chips.py
    compares the chips' weight distributions themselves)."""
    name, mapping_change = VARIANTS[variant]
    analog = to_analog(load_checkpoint(cnn_bn_digits[0]), preset(name, mapping_change),
                     "keep").checkpoint
    results = {}
    for engine in ("aihwkit", "fast"):
        settings = InferSettings(times=(1.0, 31536000.0), repeats=10, seed=0, engine=engine)
        results[engine] = run_inference(analog, digits, settings, progress=False)
    for ref, fast in zip(results["aihwkit"].summary, results["fast"].summary):
        assert ref.t_inference == fast.t_inference
        if ref.std == 0 and fast.std == 0:
            assert fast.mean == pytest.approx(ref.mean, abs=1e-9)
            continue
        acc = {e: [r.accuracy for r in results[e].records if r.t_inference == ref.t_inference]
               for e in results}
        p_value = ttest_ind(acc["fast"], acc["aihwkit"], equal_var=False).pvalue
        assert p_value > 0.01, (variant, ref, fast, p_value)


def test_the_kernel_runs_the_io_presets_on_the_cpu(monkeypatch):
    # what the validation above checks is the kernel, wherever it can run
    if not kernels.available():
        pytest.skip("no C compiler: the fused kernel is unavailable")
    calls = []
    mvm = kernels.mvm
    monkeypatch.setattr(kernels, "mvm", lambda *a, **k: calls.append(1) or mvm(*a, **k))
    e = create_engine("fast", small_net(), load_preset("pcm"), torch.device("cpu"))
    e.program(3)
    with torch.no_grad():
        e.model(torch.randn(2, 3, 8, 8))
    assert len(calls) >= 5  # every layer: four of them one tile each, one of several


def test_fast_engine_is_seeded(cnn_bn_digits, digits):
    analog = to_analog(load_checkpoint(cnn_bn_digits[0]), load_preset("pcm"), "fold").checkpoint
    settings = InferSettings(times=(1.0, 86400.0), repeats=2, seed=4, engine="fast")
    a = run_inference(analog, digits, settings, progress=False)
    b = run_inference(analog, digits, settings, progress=False)
    assert a.records == b.records


def test_fast_is_the_default_engine():
    assert DEFAULT_ENGINE == "fast"
