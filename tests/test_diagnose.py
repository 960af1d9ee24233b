"""hwsim.diagnose: per-layer sensitivity, BN statistics on the chip, error along the depth."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner

from hwsim.analog.presets import load_preset
from hwsim.checkpoint import load_checkpoint, save_checkpoint
from hwsim.cli import cli
from hwsim.diagnose import DiagnoseSettings, Diagnosis, diagnose, exact_layers
from hwsim.diagnose.summary import format_summary, shift_trend
from hwsim.inference.chip import build_chip
from hwsim.inference.montecarlo import InferSettings, run_inference
from hwsim.models import create_model

YEAR = 365.25 * 86400


def _diag(path, digits, preset, engine="fast", repeats=2, subset=150, **kw):
    return diagnose(load_checkpoint(path), digits, preset,
                    DiagnoseSettings(times=(YEAR,), repeats=repeats, test_subset=subset,
                                     engine=engine, calib_size=256, depth_images=100),
                    progress=False, **kw)


@pytest.mark.parametrize("engine", ["fast", "aihwkit"])
def test_on_the_ideal_preset_nothing_is_lost_and_nothing_shifts(cnn_bn_digits, digits, engine,
                                                                one_thread):
    diag = _diag(cnn_bn_digits[0], digits, load_preset("ideal"), engine)
    (t,) = diag.times
    assert diag.whole_loss(t).mean == 0
    for loss in diag.layer_losses(t):
        assert abs(loss.only.diff) < 1e-9 and abs(loss.but.diff) < 1e-9
    prof = diag.bn_profile(t)
    assert len(prof) == 3
    for p in prof:
        assert p.values["chip_shift"].mean < 1e-4
        assert abs(p.values["chip_var_ratio"].mean - 1) < 1e-4
        # the chip sees what the digital model sees: the shift vs stored is the floor's
        assert abs(p.values["shift"].mean - p.values["digital_shift"].mean) < 1e-4
    assert max(s.mean for _, _, s in diag.depth_profile(t)) < 1e-4


def _fragile(path, tmp_path, layer="4", bn="5", scale=0.03):
    """The checkpoint with conv ``layer`` scaled by ``scale`` and its BN's statistics scaled
    to match: the same digital function (up to BN's eps), a much smaller analog signal."""
    ckpt = load_checkpoint(path)
    state = dict(ckpt.state_dict)
    state[f"{layer}.weight"] = state[f"{layer}.weight"] * scale
    state[f"{bn}.running_mean"] = state[f"{bn}.running_mean"] * scale
    state[f"{bn}.running_var"] = state[f"{bn}.running_var"] * scale**2
    out = tmp_path / "fragile.pt"
    save_checkpoint(dataclasses.replace(ckpt, state_dict=state), out)
    return out


def test_a_fragile_layer_ranks_first_under_pcm(cnn_bn_digits, digits, tmp_path, one_thread):
    # pcm with aihwkit's default mapping (omega 0, weights unscaled on the tile): the output
    # noise is fixed, so a layer whose weights are 30x smaller drowns in it. (hwsim's own
    # pcm scales each tile to its largest weight, which would undo a uniform scale.)
    pcm = load_preset("pcm")
    pcm = dataclasses.replace(pcm, mapping=dataclasses.replace(pcm.mapping,
                                                               weight_scaling_omega=0.0))
    fragile = _fragile(cnn_bn_digits[0], tmp_path)
    diag = _diag(fragile, digits, pcm)
    assert abs(diag.digital_accuracy - cnn_bn_digits[1].test_accuracy) < 0.02
    (t,) = diag.times
    ranked = diag.layer_losses(t)
    assert ranked[0].layer.name == "4"
    assert ranked[0].only.diff > 0.2  # alone on the chip it costs a lot
    assert ranked[0].only.diff > max(x.only.diff for x in ranked[1:]) + 0.1
    # the scaling is what made it fragile: unmodified, the same layer loses far less
    plain = _diag(cnn_bn_digits[0], digits, pcm)
    same = [x for x in plain.layer_losses(t) if x.layer.name == "4"][0]
    assert ranked[0].only.diff > same.only.diff + 0.15


def test_recalibration_brings_the_bn_shift_to_about_zero(cnn_bn_digits, digits, one_thread):
    """On the calibration images, with fresh forward noise: RMS shift < 0.03 stored std and
    variance ratio within 2% of 1 after recalibration, where the kept statistics are off."""
    diag = _diag(cnn_bn_digits[0], digits, load_preset("pcm"), repeats=2)
    prof = diag.bn_profile(diag.times[0])
    for p in prof:
        assert p.values["recal_shift"].mean < 0.03
        assert abs(p.values["recal_var_ratio"].mean - 1) < 0.02
    assert prof[-1].values["shift"].mean > 5 * prof[-1].values["recal_shift"].mean
    assert prof[-1].values["chip_shift"].mean > 0.05


@pytest.mark.parametrize("bn_mode", ["keep", "recal"])
def test_the_chips_are_those_of_hwsim_infer(cnn_bn_digits, digits, bn_mode, one_thread):
    """gaussian has no forward noise: the whole chip's accuracy per repeat is infer's, BN
    recalibrated or not."""
    preset = load_preset("gaussian").with_eta(0.4)
    diag = _diag(cnn_bn_digits[0], digits, preset, repeats=3, bn_mode=bn_mode)
    assert diag.meta["bn_mode"] == bn_mode
    res = run_inference(load_checkpoint(cnn_bn_digits[0]), digits,
                        InferSettings(times=(YEAR,), repeats=3, test_subset=150,
                                      calib_size=256 if bn_mode == "recal" else None),
                        preset=preset, bn_mode=bn_mode, progress=False)
    whole = {r["repeat"]: r["accuracy"] for r in diag.sensitivity if r["config"] == "all"}
    assert whole == {r.repeat: r.accuracy for r in res.records}


def test_engines_agree_exactly_under_weight_noise(cnn_bn_digits, digits, one_thread):
    """gaussian chips are the same draws in both engines: the per-layer numbers coincide."""
    preset = load_preset("gaussian").with_eta(0.5)
    a, b = (_diag(cnn_bn_digits[0], digits, preset, e, repeats=2) for e in ("fast", "aihwkit"))
    acc = [{(r["config"], r["layer"], r["repeat"]): r["accuracy"] for r in d.sensitivity}
           for d in (a, b)]
    assert acc[0].keys() == acc[1].keys()
    assert max(abs(acc[0][k] - acc[1][k]) for k in acc[0]) <= 1 / 150 + 1e-9


def test_engines_agree_in_distribution_under_pcm(cnn_bn_digits, digits, one_thread):
    """pcm chips are different draws from one distribution: per layer, the error along the
    depth within 15%, the BN shift within 20% and the per-layer losses within 4 pp (3 chips
    each)."""
    a, b = (_diag(cnn_bn_digits[0], digits, load_preset("pcm"), e, repeats=3, subset=200)
            for e in ("fast", "aihwkit"))
    t = a.times[0]
    for (_, _, ea), (_, _, eb) in zip(a.depth_profile(t), b.depth_profile(t), strict=True):
        assert abs(ea.mean - eb.mean) < 0.15 * eb.mean
    for pa, pb in zip(a.bn_profile(t), b.bn_profile(t), strict=True):
        assert abs(pa.values["chip_shift"].mean - pb.values["chip_shift"].mean) \
            < 0.2 * pb.values["chip_shift"].mean + 0.005
    la = {x.layer.name: x for x in a.layer_losses(t)}
    for x in b.layer_losses(t):
        assert abs(x.only.diff - la[x.layer.name].only.diff) < 0.04
        assert abs(x.but.diff - la[x.layer.name].but.diff) < 0.04


def test_exact_layers_swaps_and_puts_back(cnn_bn_digits, digits):
    chip = build_chip(load_checkpoint(cnn_bn_digits[0]), digits, preset=load_preset("pcm"))
    chip.engine.program(0)
    model = chip.engine.model
    before = {n: m for n, m in model.named_children()}
    with exact_layers(model, chip.engine.digital, ["4", "13"]) as m:
        assert m[4] is chip.engine.digital[4] and m[13] is chip.engine.digital[13]
    assert {n: m for n, m in model.named_children()} == before


def test_layer_inventory_and_round_trip(cnn_bn_digits, digits, tmp_path, one_thread):
    diag = _diag(cnn_bn_digits[0], digits, load_preset("gaussian").with_eta(0.3),
                 compare=load_checkpoint(cnn_bn_digits[0]))
    names = [(x.name, x.bn, x.kind) for x in diag.layers]
    assert names == [("0", "1", "conv"), ("4", "5", "conv"), ("8", "9", "conv"),
                     ("13", "", "linear")]
    assert math.isclose(sum(x.share for x in diag.layers), 1.0)
    again = Diagnosis.from_dict(json.loads(json.dumps(diag.to_dict())))
    t = diag.times[0]
    assert again.layer_losses(t) == diag.layer_losses(t)
    # a compare model identical to the main one on the same chips: the same depth errors
    assert [s.mean for *_, s in diag.depth_profile(t, "compare")] == \
        pytest.approx([s.mean for *_, s in diag.depth_profile(t)])
    assert "whole chip loses" in format_summary(diag)
    assert shift_trend(diag, t).testable is False  # 3 BN layers cannot reach p < 0.05


def test_fold_has_no_bn_on_the_chip(cnn_bn_digits, digits, one_thread):
    diag = _diag(cnn_bn_digits[0], digits, load_preset("gaussian").with_eta(0.3),
                 bn_mode="fold", repeats=2)
    assert diag.bn == [] and diag.meta["bn_mode"] == "fold"
    assert [x.bn for x in diag.layers][:3] == ["folded (1)", "folded (5)", "folded (9)"]


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_writes_the_diagnosis(cnn_bn_digits, cnn_nobn_digits, tmp_path, one_thread):
    out = tmp_path / "diag"
    r = _cli("diagnose", "--model", cnn_bn_digits[0], "--device", "gaussian", "--eta", "0.5",
             "--repeats", "2", "--test-subset", "100", "--compare", cnn_nobn_digits[0],
             "--out", out)
    assert r.exit_code == 0, r.output
    assert "evaluations of 100 test images" in r.output and "whole chip loses" in r.output
    assert {p.name for p in out.iterdir()} == {
        "diagnosis.json", "diagnosis.md", "sensitivity-static.png", "bn-stats-static.png",
        "depth-error-static.png"}
    data = json.loads((out / "diagnosis.json").read_text())
    assert {r["model"] for r in data["depth"]} == {"main", "compare"}


@pytest.mark.parametrize("args, message", [
    (["--device", "pcm", "--repeats", "0"], "--repeats"),
    (["--device", "nosuch"], "nosuch"),
    (["--device", "pcm", "--eta", "0.5"], "no weight_noise"),
    (["--device", "pcm", "--t-inference", "1y,1y"], "1y"),
    (["--device", "pcm", "--engine", "aihwkit-cpp"], "aihwkit-cpp"),
])
def test_cli_refuses_bad_input_in_one_line(cnn_bn_digits, args, message):
    r = _cli("diagnose", "--model", cnn_bn_digits[0], *args)
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], r.output


def test_cli_refuses_recal_without_bn_and_a_mismatched_compare(cnn_nobn_digits, tmp_path):
    r = _cli("diagnose", "--model", cnn_nobn_digits[0], "--device", "pcm", "--bn", "recal")
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1
    other = load_checkpoint(cnn_nobn_digits[0])
    path = tmp_path / "other.pt"
    resnet = create_model("resnet20", bn=False, num_classes=10, in_channels=1)
    save_checkpoint(dataclasses.replace(other, arch="resnet20",
                                        state_dict=resnet.state_dict()), path)
    r = _cli("diagnose", "--model", cnn_nobn_digits[0], "--device", "pcm", "--compare", path)
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1, r.output
    assert "same architecture" in r.output


def test_the_shift_trend_over_many_bn_layers_can_pass_and_fail():
    """Past 7 points the permutation test draws 9,999 seeded pairings: reproducible, able to
    find a noisy rise and to refuse a fall or noise."""
    from hwsim.stats import spearman_trend

    gen = torch.Generator().manual_seed(0)
    depth = list(range(19))
    rising = [0.02 * d + float(torch.randn(1, generator=gen)) * 0.1 for d in depth]
    rho, p = spearman_trend(depth, rising)
    assert rho > 0.5 and p < 0.01 and (rho, p) == spearman_trend(depth, rising)
    assert spearman_trend(depth, rising[::-1])[1] > 0.5
    noise = [float(torch.randn(1, generator=gen)) for _ in depth]
    assert spearman_trend(depth, noise)[1] > 0.05
