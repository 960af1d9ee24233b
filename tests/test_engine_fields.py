"""The fast engine against aihwkit over every preset field, generated (not hand-picked).

``FIELD_VALUES`` lists, for every field of a device preset that changes what a chip computes,
the values the validation tries: each choice of a Literal or bool field, and for numbers the
default, zero and values on either side of the default (resolutions given as a step and as
a number of levels, bounds below and above the defaults, tiny tiles). Two generated designs
run every layer kind (3x3, strided 1x1 and strided over-padded convs, linears, with and
without bias) through both engines, on the same programmed chip:

* an all-pairs design: every value of every field meets every value of every other field in
  at least one case (a covering array, built greedily and deterministically below);
* a hypothesis sample (derandomized) of the whole product, for higher-order combinations.

Forward noise is replaced by a constant in both engines while they run (aihwkit's draws and
the fast engine's :func:`hwsim.engine.fast.standard_normal`), so the noise amplitudes, and
where the noise enters, are compared exactly; :func:`test_noise_draws_are_independent`
checks the draws themselves. Outputs must agree to float tolerance with exact IO, and up
to rounding ties (a value at a quantisation boundary) with DAC/ADC quantisation.

A schema field that this table neither varies nor lists as refused fails
:func:`test_every_preset_field_is_validated_or_refused`.
"""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st
from torch import nn

from hwsim.analog.presets import (
    DevicePreset,
    ForwardSpec,
    MappingSpec,
    NoiseModelSpec,
    WeightNoiseSpec,
    load_preset,
    preset_from_dict,
)
from hwsim.engine import create_engine
from hwsim.errors import ConfigError, SimulationError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors

# ------------------------------------------------------------------ what is validated

# The first value of each list is the base (the pcm preset's value, or the default).
IO_FIELDS = {
    "forward.inp_res": [1 / 126, 0.0, 0.3, 64.0],  # 7-bit step, off, coarse step, levels
    "forward.inp_bound": [1.0, 0.0, 0.5, 2.5],  # 0: unbounded (only with inp_res 0)
    "forward.inp_noise": [0.0, 0.04],
    "forward.out_res": [1 / 510, 0.0, 0.07, 200.0],
    "forward.out_bound": [12.0, 0.0, 0.6, 3.0],  # 0.6: bound management at work
    "forward.out_noise": [0.06, 0.0],
    "forward.noise_management": ["abs_max", "max", "none"],
    "forward.bound_management": ["iterative", "none"],
}
# 9 inputs = one 3x3 channel per tile, 7 cuts through channels, 2 is tiny (1: its own test)
CHIP_FIELDS = {
    "mapping.max_input_size": [512, 9, 7, 2],
    "mapping.max_output_size": [512, 2, 1],
    "mapping.weight_scaling_omega": [1.0, 0.0, 0.6],
    "mapping.weight_scaling_columnwise": [False, True],
    "mapping.digital_bias": [True],
    "noise_model.type": ["pcm", "none", "reram-cmo", "reram-wan2022"],
    "noise_model.g_max": [25.0, None, 10.0, 5.0],
    "noise_model.prog_noise_scale": [1.0, 0.0, 2.0],
    "noise_model.read_noise_scale": [1.0, 0.0, 3.0],
    "noise_model.drift_scale": [1.0, 0.0, 2.0],
    "noise_model.acceptance_range": [0.2, 2.0],
    "drift_compensation": ["global", "none"],
    "weight_noise.type": [None, "additive", "multiplicative"],
    "weight_noise.eta": [0.1, 0.3],
}
# forward.is_perfect splits the validation: False runs every IO field, True none of them.
PERFECT_FIELD = "forward.is_perfect"
# Values the loader refuses (tests below check each is a one-line ConfigError naming the key).
REFUSED = {
    "mapping.digital_bias": [False],  # no analog bias on aihwkit's torch tile
}
# Pairs of values the loader refuses together: a bound of 0 with a quantiser (NaN in
# aihwkit), a ReRAM g_max below its g_min (aihwkit raises).
REFUSED_TOGETHER = [
    ("forward.inp_bound", 0.0, "forward.inp_res", lambda res: res > 0),
    ("forward.out_bound", 0.0, "forward.out_res", lambda res: res > 0),
    ("noise_model.type", "reram-cmo", "noise_model.g_max", lambda g: g is not None and g <= 9),
]
# Preset fields that only describe the preset.
DESCRIPTIVE = {"name", "description", "source", "path"}


def accepted(values: dict) -> bool:
    """Whether the loader accepts these (possibly partial) field values."""
    for key, bad, other, refused in REFUSED_TOGETHER:
        if values.get(key) == bad and other in values and refused(values[other]):
            return False
    return all(values.get(k) not in v for k, v in REFUSED.items() if k in values)


def make_preset(values: dict) -> DevicePreset:
    """The pcm preset with ``values`` (dotted keys) set, through the loader's validation."""
    data = load_preset("pcm").to_dict()
    del data["path"]
    wn_type = values.get("weight_noise.type")
    data["weight_noise"] = None if wn_type is None else {
        "type": wn_type, "eta": values.get("weight_noise.eta", 0.1)}
    for key, value in values.items():
        if not key.startswith("weight_noise."):
            section, _, name = key.rpartition(".")
            (data[section] if section else data)[name] = value
    return preset_from_dict(data, "generated preset")


# ------------------------------------------------------------------ the all-pairs design


def all_pairs(values: dict[str, list], allowed=accepted) -> list[dict]:
    """Rows of field values in which every value of every field meets every value of every
    other field at least once (pairs that ``allowed`` refuses excepted).

    Greedy and deterministic: start each row from the first pair not yet covered, then give
    every other field the value that covers most new pairs (the earliest value on ties).
    """
    names = list(values)
    order = {n: i for i, n in enumerate(names)}

    def pair(a, i, b, j):
        return (a, i, b, j) if order[a] < order[b] else (b, j, a, i)

    def real(row):
        return {n: values[n][i] for n, i in row.items()}

    todo = {pair(a, i, b, j) for a in names for b in names if order[a] < order[b]
            for i in range(len(values[a])) for j in range(len(values[b]))
            if allowed({a: values[a][i], b: values[b][j]})}
    rows = []
    while todo:
        a, i, b, j = min(todo)
        row = {a: i, b: j}
        for n in names:
            if n not in row:
                fits = [v for v in range(len(values[n])) if allowed(real({**row, n: v}))]
                row[n] = max(fits, key=lambda v: sum(pair(m, row[m], n, v) in todo
                                                     for m in row))
        todo -= {pair(m, row[m], n, row[n]) for m in row for n in row if order[m] < order[n]}
        rows.append(real({n: row[n] for n in names}))
    return rows


IO_CASES = [{PERFECT_FIELD: False, **row} for row in all_pairs({**IO_FIELDS, **CHIP_FIELDS})]
PERFECT_CASES = [{PERFECT_FIELD: True, **row} for row in all_pairs(CHIP_FIELDS)]

# ------------------------------------------------------------------ running both engines


def validation_net() -> nn.Sequential:
    """Every layer kind the engines map: 3x3 convs (18 and 36 inputs), a strided 1x1 conv, a
    strided conv padded beyond half its kernel without bias, a linear with and one without
    bias. Weights large enough that bound management engages at small output bounds. Even
    input sizes: tiles of 2 inputs never leave a tile of a single weight."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1),
        nn.Conv2d(4, 4, 1, stride=2), nn.Conv2d(4, 2, 3, stride=2, padding=2, bias=False),
        nn.Flatten(), nn.Linear(18, 6), nn.Linear(6, 4, bias=False),
    ).eval()
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.3)
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.3)
    return net


def layer_inputs(net: nn.Sequential) -> dict[str, torch.Tensor]:
    """Per analog layer, a batch that exercises noise management: a signed input, an all-zero
    one (its scale falls back to 1), an all-negative one (its ``max`` is negative) and a
    large one (it clips the ADC)."""
    g = torch.Generator().manual_seed(1)
    shapes = {"0": (2, 6, 6), "1": (4, 6, 6), "2": (4, 6, 6), "3": (4, 3, 3), "5": (18,),
              "6": (6,)}
    inputs = {}
    for name, shape in shapes.items():
        x = torch.randn((4, *shape), generator=g)
        x[1] = 0.0
        x[2] = -x[2].abs()
        x[3] *= 4.0
        inputs[name] = x
    assert set(inputs) == {n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d,
                                                                               nn.Linear))}
    return inputs


NOISE = 0.8125  # the constant that stands for every N(0, 1) draw while outputs are compared


def constant_noise(monkeypatch):
    import aihwkit.simulator.tiles.analog_mvm as aihwkit_mvm

    import hwsim.engine.fast as fast

    monkeypatch.setattr(aihwkit_mvm, "randn_like", lambda t: torch.full_like(t, NOISE))
    monkeypatch.setattr(fast, "standard_normal",
                        lambda shape, device: torch.full(shape, NOISE, device=device))


def layer_outputs(preset: DevicePreset, inputs: dict, monkeypatch, zero: bool = False,
                  net: nn.Module | None = None):
    """{layer: (aihwkit output, fast output)} on one chip (same seeds), constant noise."""
    net = net or validation_net()
    engines = {}
    for name in ("aihwkit", "fast"):
        e = create_engine(name, net, preset, torch.device("cpu"))
        if name == "fast":  # aihwkit's chip, draw for draw: the forward alone is compared
            e.use_reference_chips()
        e.program(5)
        if preset.time_dependent:
            e.drift(86400.0, 6)
        engines[name] = dict(e.model.named_modules())
    out = {}
    with monkeypatch.context() as m, torch.no_grad():
        constant_noise(m)
        for layer, x in inputs.items():
            x = torch.zeros_like(x) if zero else x
            out[layer] = tuple(engines[e][layer](x) for e in ("aihwkit", "fast"))
    return out


def assert_agree(preset: DevicePreset, outputs: dict, case) -> None:
    f = preset.forward
    quantised = not f.is_perfect and (f.inp_res > 0 or f.out_res > 0)
    for layer, (ref, fast) in outputs.items():
        assert fast.shape == ref.shape
        assert torch.isfinite(ref).all(), (layer, case)
        close = torch.isclose(fast, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
        # quantised: a value exactly at a level boundary may round the other way (the two
        # engines sum in different orders), nothing more
        allowed = max(1, close.numel() // 100) if quantised else 0
        misses = int((~close).sum())
        assert misses <= allowed, (
            f"layer {layer}: {misses} of {close.numel()} outputs differ, max diff "
            f"{float((fast - ref).abs().max()):.3g} of max {float(ref.abs().max()):.3g}; {case}")


@pytest.mark.parametrize("case", IO_CASES, ids=[f"io{i:02d}" for i in range(len(IO_CASES))])
def test_fast_matches_aihwkit_all_pairs_io(case, monkeypatch):
    preset = make_preset(case)
    inputs = layer_inputs(validation_net())
    assert_agree(preset, layer_outputs(preset, inputs, monkeypatch), case)


@pytest.mark.parametrize("case", PERFECT_CASES,
                         ids=[f"perfect{i:02d}" for i in range(len(PERFECT_CASES))])
def test_fast_matches_aihwkit_all_pairs_perfect_forward(case, monkeypatch):
    preset = make_preset(case)
    inputs = layer_inputs(validation_net())
    assert_agree(preset, layer_outputs(preset, inputs, monkeypatch), case)


@pytest.mark.parametrize("nm", IO_FIELDS["forward.noise_management"])
@pytest.mark.parametrize("inp_noise", [0.0, 0.04])
def test_all_zero_input(nm, inp_noise, monkeypatch):
    # aihwkit skips the MVM, output noise included, when every input vector is zero and there
    # is no input noise; but not without noise management (its scale is 1, not 0)
    preset = make_preset({"forward.noise_management": nm, "forward.inp_noise": inp_noise})
    inputs = layer_inputs(validation_net())
    assert_agree(preset, layer_outputs(preset, inputs, monkeypatch, zero=True), (nm, inp_noise))


SAMPLED_FIELDS = {**IO_FIELDS, **CHIP_FIELDS}


# derandomized: the same examples every run; no shrinking (each example costs a second)
@settings(derandomize=True, database=None, max_examples=20, deadline=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
@given(case=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in SAMPLED_FIELDS.items()}))
def test_fast_matches_aihwkit_sampled(monkeypatch, case):
    try:
        preset = make_preset({PERFECT_FIELD: False, **case})
    except ConfigError as e:
        assert not accepted(case), e  # only the documented refusals
        reject()
    inputs = layer_inputs(validation_net())
    assert_agree(preset, layer_outputs(preset, inputs, monkeypatch), case)


def test_single_weight_tiles(monkeypatch):
    # tiles of one weight each (1 x 1), on a small conv and linear
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten(), nn.Linear(2 * 3 * 3, 3)).eval()
    inputs = {"0": torch.randn(3, 1, 4, 4), "2": torch.randn(3, 18)}
    case = {"mapping.max_input_size": 1, "mapping.max_output_size": 1}
    preset = make_preset(case)
    assert_agree(preset, layer_outputs(preset, inputs, monkeypatch, net=net), case)
    # ReRAM-CMO maps a tile's [min, max] weight onto [g_min, g_max]: no range, NaN weights
    preset = make_preset({**case, "noise_model.type": "reram-cmo"})
    e = create_engine("fast", net, preset, torch.device("cpu"))
    with pytest.raises(SimulationError, match="reram-cmo noise model left non-finite weights "
                                              "in layer '0'.*use larger tiles"):
        e.program(5)


# ------------------------------------------------------------------ noise draws


@pytest.mark.parametrize("layer", ["conv", "linear"])
@pytest.mark.parametrize("noise", ["out_noise", "inp_noise"])
def test_noise_draws_are_independent(layer, noise):
    """With real draws: the spread of each output over 400 copies of one input, and the
    correlation between outputs, match aihwkit's (exact IO otherwise)."""
    preset = make_preset({"forward.inp_res": 0.0, "forward.out_res": 0.0,
                          "forward.out_noise": 0.0, f"forward.{noise}": 0.1})
    net = validation_net()
    name, shape = ("1", (4, 6, 6)) if layer == "conv" else ("5", (18,))
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(2)).expand(
        400, *shape).contiguous()
    spread = {}
    for engine in ("aihwkit", "fast"):
        e = create_engine(engine, net, preset, torch.device("cpu"))
        if engine == "fast":
            e.use_reference_chips()
        e.program(5)
        e.drift(86400.0, 6)
        torch.manual_seed(7)
        with torch.no_grad():
            y = dict(e.model.named_modules())[name](x).reshape(400, -1)
        y = y - y.mean(0)
        corr = torch.corrcoef(y.T)
        off_diagonal = corr[~torch.eye(len(corr), dtype=torch.bool)]
        spread[engine] = (float(y.std(0).mean()), float(off_diagonal.abs().mean()))
    (std_ref, corr_ref), (std_fast, corr_fast) = spread["aihwkit"], spread["fast"]
    assert std_fast == pytest.approx(std_ref, rel=0.05)
    assert corr_fast == pytest.approx(corr_ref, abs=0.02)


# ------------------------------------------------------------------ the table is complete


def _schema_fields() -> dict[str, object]:
    """Every field a preset file may hold, dotted, with its type hint."""
    fields = {}
    for section, cls in (("", DevicePreset), ("forward", ForwardSpec), ("mapping", MappingSpec),
                         ("noise_model", NoiseModelSpec), ("weight_noise", WeightNoiseSpec)):
        for name, tp in typing.get_type_hints(cls).items():
            if section == "" and name in {"forward", "mapping", "noise_model", "weight_noise"}:
                continue  # sections: their fields are listed under their own prefix
            fields[f"{section}.{name}" if section else name] = tp
    return fields


def test_every_preset_field_is_validated_or_refused():
    validated = {**IO_FIELDS, **CHIP_FIELDS, PERFECT_FIELD: [False, True]}
    schema = _schema_fields()
    missing = set(schema) - set(validated) - set(REFUSED) - DESCRIPTIVE
    assert not missing, f"preset fields the fast-vs-aihwkit validation does not try: {missing}"
    assert not set(validated) - set(schema), "the table names fields the schema lacks"
    for key, tp in schema.items():
        if key in DESCRIPTIVE:
            continue
        tried = validated.get(key, []) + REFUSED.get(key, [])
        choices = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else (
            (False, True) if tp is bool else ())
        never = set(choices) - set(tried)
        assert not never, f"{key}: choices never tried: {never}"
        assert len(tried) >= 2, f"{key}: only one value tried"
    for key, bad, other, _ in REFUSED_TOGETHER:
        assert bad in validated[key] and other in validated


def test_all_pairs_design_covers_every_pair():
    fields = {**IO_FIELDS, **CHIP_FIELDS}
    names = list(fields)
    for x, a in enumerate(names):
        for b in names[x + 1:]:
            for va in fields[a]:
                for vb in fields[b]:
                    if accepted({a: va, b: vb}):
                        assert any(c[a] == va and c[b] == vb for c in IO_CASES), (a, va, b, vb)
    assert all(accepted(c) for c in IO_CASES + PERFECT_CASES)


REFUSALS = [
    ({"mapping.digital_bias": False}, "mapping.digital_bias: false (a bias on the analog tile)"),
    ({"forward.inp_bound": 0.0}, "forward.inp_bound: 0 (unbounded) cannot be combined with "
                                 "inp_res > 0"),
    ({"forward.out_bound": 0.0}, "forward.out_bound: 0 (unbounded) cannot be combined with "
                                 "out_res > 0"),
    ({"forward.out_noise": float("nan")}, "forward.out_noise: must be a finite number"),
    ({"noise_model.type": "reram-cmo", "noise_model.g_max": 5.0},
     "noise_model.g_max: reram-cmo maps weights onto [g_min, g_max] with aihwkit's g_min = 9 uS"),
    ({"mapping.weight_scaling_omega": float("inf")},
     "mapping.weight_scaling_omega: must be a finite number"),
]


@pytest.mark.parametrize("values,message", REFUSALS, ids=[m.split(":")[0] for _, m in REFUSALS])
def test_refused_settings_name_the_key_at_load(values, message, tmp_path):
    with pytest.raises(ConfigError, match="^generated preset: " + re.escape(message)):
        make_preset(values)
    # from a file: one line that names the file and the key
    data = {"name": "mine", "description": "d", "source": "s"}
    for dotted, value in values.items():
        section, _, key = dotted.partition(".")
        data.setdefault(section, {})[key] = value
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_preset(path)
    assert str(err.value).startswith(f"{path}: {message}") and "\n" not in str(err.value)


def test_dataclass_fields_match_aihwkit_names():
    # to_rpu_config copies forward and mapping fields by name: each must exist in aihwkit
    from hwsim.engine.rpu import to_rpu_config

    cfg = to_rpu_config(make_preset({}))
    for f in dataclasses.fields(ForwardSpec):
        assert hasattr(cfg.forward, f.name), f.name
    for f in dataclasses.fields(MappingSpec):
        assert hasattr(cfg.mapping, f.name), f.name
