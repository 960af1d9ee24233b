"""Chips stacked in one forward (:mod:`hwsim.engine.stacked`) give the numbers of one chip at
a time: the same logits, bit for bit, and the same records from the Monte-Carlo loop.

Generated over the presets' forward paths: the fused kernel and the eager path (forced by
turning the kernel off, and by input noise, which only the eager path computes), the perfect
forward, several tiles per layer, layers without bias, aihwkit-programmed (reference) chips,
and evaluation batches smaller than the test subset (each chip's noise stream continues
from batch to batch as it would alone).
"""

from __future__ import annotations

import pytest
import torch

from hwsim.engine import create_engine, kernels
from hwsim.engine.stacked import stack_inputs
from hwsim.inference import montecarlo
from hwsim.inference.montecarlo import run_repeat, stack_size
from hwsim.models import create_model
from tests.test_chips import make

pytestmark = pytest.mark.usefixtures("one_thread")

TIMES = [1.0, 86400.0, 172800.0]  # times reram-wan2022 defines
CASES = [
    ("pcm", {}, "kernel"),
    ("pcm", {}, "eager"),
    ("pcm", {"bn": True}, "kernel"),  # resnet20: BN, residual additions, 1x1 shortcuts
    ("pcm", {"bn": True}, "eager"),
    ("gaussian", {"bn": True}, "kernel"),
    ("pcm", {"forward.inp_noise": 0.05}, "kernel"),  # input noise: the eager path
    ("pcm", {"mapping.max_input_size": 20, "mapping.max_output_size": 24}, "kernel"),
    ("pcm", {"mapping.max_input_size": 20, "mapping.max_output_size": 24}, "eager"),
    ("pcm-column", {}, "kernel"),
    ("pcm", {"forward.noise_management": "max"}, "eager"),
    ("reram", {}, "kernel"),
    ("reram-wan2022", {}, "kernel"),  # programmed by aihwkit's tiles
    ("pcm-weights-only", {}, "kernel"),
    ("gaussian", {"weight_noise.eta": 0.5}, "kernel"),
    ("ideal", {}, "kernel"),
]


def _net(bn: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_model("resnet20" if bn else "cnn", bn=bn, num_classes=10, in_channels=1,
                       input_size=8).eval()
    return net


def _batch(b: torch.Tensor) -> torch.Tensor:
    """A fresh channels-last batch, as :func:`hwsim.data.iterate_batches` yields them."""
    return b.contiguous(memory_format=torch.channels_last)


def _drifted(engine, times, seed):
    """Program chip ``seed``, then yield once it is drifted to each of ``times``."""
    engine.program(seed)
    for i, t in enumerate(times):
        if engine.preset.time_dependent:
            engine.drift(t, seed + 1 + i)
        yield t


def _sequential_logits(engine, x, times, seed):
    out = []
    for _ in _drifted(engine, times, seed):
        with torch.no_grad():
            out.append(torch.cat([engine.model(_batch(b)) for b in x.split(7)]))
    return out


def _stacked_logits(engine, x, times, seed):
    snaps = [engine.snapshot() for _ in _drifted(engine, times, seed)]
    model = engine.stacked_model(snaps)
    parts = []
    with torch.no_grad():
        for b in x.split(7):
            parts.append(model(stack_inputs(_batch(b), len(snaps))).view(len(snaps), len(b), -1))
    return list(torch.cat(parts, 1))


@pytest.mark.parametrize("name,change,path", CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in c.items())}-{p}"
                              for n, c, p in CASES])
def test_stacked_chips_equal_one_at_a_time(name, change, path, digits, monkeypatch):
    if path == "eager":
        monkeypatch.setattr(kernels, "available", lambda: False)
    change = dict(change)
    bn = change.pop("bn", False)
    preset = make(name, change)
    x = digits.test_x[:24].float() / 255.0
    engine = create_engine("fast", _net(bn), preset, torch.device("cpu"))
    one = _sequential_logits(engine, x, TIMES, 11)
    stacked = _stacked_logits(engine, x, TIMES, 11)
    for t, a, b in zip(TIMES, one, stacked):
        assert torch.equal(a, b), (t, float((a - b).abs().max()))


def test_reference_chips_stack_too(digits):
    x = digits.test_x[:10].float() / 255.0
    engine = create_engine("fast", _net(False), make("pcm", {}), torch.device("cpu"))
    engine.use_reference_chips()
    for a, b in zip(_sequential_logits(engine, x, TIMES[:2], 5),
                    _stacked_logits(engine, x, TIMES[:2], 5)):
        assert torch.equal(a, b)


def test_monte_carlo_records_do_not_depend_on_stacking(digits, monkeypatch):
    """run_repeat with its times stacked and one at a time: the same records."""
    x, y = digits.test_subset(30)
    engine = create_engine("fast", _net(True), make("pcm", {}), torch.device("cpu"))
    monkeypatch.setattr(montecarlo, "STACK_INPUT_ELEMENTS", 10**9)
    assert stack_size(engine, 3, x, 16, None) == 3
    stacked = run_repeat(engine, 2, TIMES, x, y, digits.normalization, seed=4, batch_size=16)
    monkeypatch.setattr(montecarlo, "STACK_INPUT_ELEMENTS", 0)
    assert stack_size(engine, 3, x, 16, None) == 1
    one = run_repeat(engine, 2, TIMES, x, y, digits.normalization, seed=4, batch_size=16)
    assert stacked == one


def test_stack_size_rule(digits):
    """Stacks only small batches, never with recalibration or an engine that cannot stack."""
    from hwsim.inference.chip import Recalibration

    x, _ = digits.test_subset(None)
    fast = create_engine("fast", _net(False), make("pcm", {}), torch.device("cpu"))
    limit = montecarlo.STACK_INPUT_ELEMENTS
    small = x[: limit // (3 * x[0].numel())]
    assert stack_size(fast, 5, small, 500, None) == 3
    assert stack_size(fast, 5, x, 500, None) == 1  # 450 8x8 images: one chip at a time
    assert stack_size(fast, 5, small, 500, Recalibration(small)) == 1
    ref = create_engine("aihwkit", _net(False), make("pcm", {}), torch.device("cpu"))
    assert stack_size(ref, 5, small, 500, None) == 1
