"""hwsim's chips (:mod:`hwsim.engine.chips`) against aihwkit's, as distributions.

The fast engine draws its chips on tensors, the ``aihwkit`` engine with aihwkit's own tiles:
the random streams differ, so the chips are compared as samples. For each case (every shipped
preset hwsim reimplements, and each noise-model, mapping and weight-noise field set to values
a preset may hold, one at a time), both engines program ``CHIPS`` chips of a small network
from the same clean weights and drift each to one day. Pooled over every weight of every
chip, three samples are compared:

* the programmed weights minus the clean ones (layer units: tile weight x mapping scale);
* the drifted weights (read noise included) minus the clean ones, before compensation;
* the global drift-compensation factors ``alpha`` (one per tile and chip).

Each must pass a two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) at a
family-wise ``FAMILY_ALPHA = 0.01`` over all the comparisons of this file (Bonferroni:
``ALPHA`` = 0.01 / (3 x the number of cases), about 8e-5 per test), and the pooled means
and standard deviations must agree (means within five standard errors, standard deviations
within 5%, or four standard errors for the small samples of ``alpha``). The 1%, 50% and 99%
quantiles are in the failure message. Values are rounded to 1e-6 first, so that a
deterministic case (a noise scale of 0) compares equal values despite float rounding.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from torch import nn

from hwsim.analog.presets import load_preset
from hwsim.engine import create_engine
from hwsim.engine.chips import supported
from hwsim.engine.tiles import read_layers

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILY_ALPHA = 0.01
CHIPS = 30
T_DRIFT = 86400.0


def chip_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(12 * 4 * 4, 10)).eval()
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.1)
    return net


# field -> values (other than the preset's own) tried one at a time
NOISE_FIELDS = {
    "pcm": {"g_max": [None, 10.0, 5.0], "prog_noise_scale": [0.0, 2.0],
            "read_noise_scale": [0.0, 3.0], "drift_scale": [0.0, 2.0]},
    "reram-cmo": {"g_max": [None, 40.0], "prog_noise_scale": [0.0, 2.0],
                  "read_noise_scale": [0.0, 3.0], "drift_scale": [0.0, 2.0],
                  "acceptance_range": [2.0]},
}
MAPPING_FIELDS = {"weight_scaling_omega": [0.0, 0.6], "weight_scaling_columnwise": [True],
                  "max_input_size": [9, 50], "max_output_size": [4]}
PRESETS = ["pcm", "pcm-column", "pcm-weights-only", "reram", "gaussian", "gaussian-mult",
           "ideal"]


def cases() -> list[tuple[str, dict]]:
    out = [(name, {}) for name in PRESETS]
    for name, kind in (("pcm", "pcm"), ("reram", "reram-cmo")):
        for field, values in NOISE_FIELDS[kind].items():
            out += [(name, {f"noise_model.{field}": v}) for v in values]
    for field, values in MAPPING_FIELDS.items():
        out += [("pcm", {f"mapping.{field}": v}) for v in values]
    out += [("gaussian", {"weight_noise.eta": 0.3}), ("gaussian", {"mapping.max_input_size": 9}),
            ("pcm", {"weight_noise": ("additive", 0.2)}),
            ("pcm-weights-only", {"weight_noise": ("multiplicative", 0.2)}),
            ("pcm", {"drift_compensation": "none"}), ("pcm", {"forward.out_noise": 0.0}),
            ("pcm", {"forward.inp_noise": 0.05})]
    return out


def make(name: str, change: dict):
    from hwsim.analog.presets import WeightNoiseSpec

    p = load_preset(name)
    for key, value in change.items():
        if key == "weight_noise":
            p = dataclasses.replace(p, weight_noise=WeightNoiseSpec(*value))
        elif key == "weight_noise.eta":
            p = p.with_eta(value)
        elif "." in key:
            section, field = key.split(".")
            p = dataclasses.replace(p, **{section: dataclasses.replace(getattr(p, section),
                                                                       **{field: value})})
        else:
            p = dataclasses.replace(p, **{key: value})
    return p


def _flat(states, alpha_out: list | None = None, divide=None) -> torch.Tensor:
    """Every layer's effective weight, flattened; ``divide``: per-layer per-tile scales to
    divide out (the compensation), returned as alpha into ``alpha_out``."""
    parts = []
    for name, state in states.items():
        w = torch.zeros(state.out_size, state.in_size)
        for k, t in enumerate(state.tiles):
            scale = t.scale
            if divide is not None:
                base = divide[name][k]
                alpha = scale / base
                alpha_out.append(alpha[0])
                scale = base
            w[t.out_start:t.out_end, t.in_start:t.in_end] = t.weight * scale[:, None]
        parts.append(w.reshape(-1))
    return torch.cat(parts)


def _scales(states):
    return {name: [t.scale.clone() for t in s.tiles] for name, s in states.items()}


def sample(engine: str, preset, net) -> dict[str, np.ndarray]:
    e = create_engine(engine, net, preset, torch.device("cpu"))
    # the same element order for both: layer by layer, (out, in) row-major
    clean = torch.cat([m.weight.detach().reshape(m.weight.shape[0], -1).reshape(-1)
                       for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    prog, drift, alphas = [], [], []
    for chip in range(CHIPS):
        e.program(1000 + chip)
        states = read_layers(e.model) if engine == "aihwkit" else e.chip_model().states()
        prog.append(_flat(states) - clean)
        base = _scales(states)
        if preset.time_dependent:
            e.drift(T_DRIFT, 2000 + chip)
            states = read_layers(e.model) if engine == "aihwkit" else e.chip_model().states()
            drift.append(_flat(states, alphas, base) - clean)
    out = {"programmed": torch.cat(prog)}
    if drift:
        out["drifted"] = torch.cat(drift)
        out["alpha"] = torch.stack(alphas)
    return {k: np.round(v.double().numpy(), 6) for k, v in out.items()}


def compare(ref: np.ndarray, got: np.ndarray, what: str, case) -> None:
    q = [0.01, 0.5, 0.99]
    info = (f"{case} {what}: mean {got.mean():.4g} vs {ref.mean():.4g}, std {got.std():.4g} "
            f"vs {ref.std():.4g}, quantiles {np.quantile(got, q)} vs {np.quantile(ref, q)}")
    if ref.std() == 0 and got.std() == 0:
        assert np.allclose(got, ref, atol=1e-5), info
        return
    p_value = ks_2samp(got, ref).pvalue
    assert p_value > ALPHA, f"KS p = {p_value:.3g}; {info}"
    se = np.sqrt(got.var() / len(got) + ref.var() / len(ref))
    assert abs(got.mean() - ref.mean()) <= 5 * se + 1e-6, info
    # a standard deviation's relative standard error is about 1 / sqrt(2n)
    rel = max(0.05, 4.0 / np.sqrt(2 * min(len(got), len(ref))))
    assert got.std() == pytest.approx(ref.std(), rel=rel, abs=1e-6), info


CASES = cases()
ALPHA = FAMILY_ALPHA / (3 * len(CASES))


@pytest.mark.parametrize("name,change", CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in c.items()) or 'base'}"
                              for n, c in CASES])
def test_chip_distributions_match_aihwkit(name, change):
    preset = make(name, change)
    assert supported(preset)
    net = chip_net()
    ref, got = sample("aihwkit", preset, net), sample("fast", preset, net)
    assert set(ref) == set(got)
    for what in ref:
        compare(ref[what], got[what], what, (name, change))


def test_wan2022_programs_with_aihwkit_tiles():
    e = create_engine("fast", chip_net(), load_preset("reram-wan2022"), torch.device("cpu"))
    assert e.reference_chips


def test_same_seed_same_chip():
    net = chip_net()
    for name in ("pcm", "gaussian", "reram"):
        e = create_engine("fast", net, load_preset(name), torch.device("cpu"))
        runs = []
        for _ in range(2):
            e.program(3)
            if e.preset.time_dependent:
                e.drift(3600.0, 4)
            runs.append(_flat(e.chip_model().states()))
        assert torch.equal(*runs)
